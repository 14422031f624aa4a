"""Consuming DLPack: ``__dlpack_device__``, ``__dlpack__(stream=...)`` and the capsule it returns.

Following the Python specification: ask the producer for a versioned tensor
(``max_version=(1, 1)``) and fall back to the legacy call on TypeError; pass the stream our work
will run on (the producer makes it wait for its own pending work); take ownership by renaming
the capsule to "used_dltensor[_versioned]"; call the tensor's deleter exactly once, after our
work on it has completed (see ``ArrayView.release``).

Every field is validated before it is used, and the only memory read is the structure the
capsule points to and the shape/strides arrays that structure points to.
"""

from __future__ import annotations

import ctypes
import math
import sys

from . import cuda_runtime as rt
from . import dlpack_abi as abi
from . import streams
from .array_view import ArrayView, c_contiguous_strides, canonical_strides
from .cai import check_pointer
from .dtypes import DLPACK_CODES, ITEMSIZE, dlpack_type_text, refuse_dtype


def dlpack_device(obj, function: str, argument: str) -> tuple[int, int]:
    """``obj.__dlpack_device__()`` as (device type, device id), validated (a CUDA ordinal too)."""
    try:
        device = obj.__dlpack_device__()
    except Exception as error:
        raise ValueError(f"{function}: {argument}: its __dlpack_device__() failed: {error}") from error
    if (not isinstance(device, tuple) or len(device) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in device)):
        raise TypeError(f"{function}: {argument}: __dlpack_device__() returned {device!r}, "
                        "not a (device type, device id) pair of ints")
    device_type, device_id = int(device[0]), int(device[1])
    if device_type in abi.CUDA_DEVICE_TYPES:
        check_ordinal(device_id, function, argument)
    return device_type, device_id


def check_ordinal(device_id: int, function: str, argument: str) -> None:
    """A CUDA device ordinal must be >= 0 and, where the GPUs can be counted, below their count."""
    if device_id < 0:
        raise ValueError(f"{function}: {argument} reports CUDA device {device_id}: a device ordinal must be >= 0")
    count = rt.known_device_count()
    if count is not None and device_id >= count:
        raise ValueError(f"{function}: {argument} reports CUDA device {device_id}, but {count} "
                         f"GPU{'s are' if count != 1 else ' is'} visible")


def _device_text(device_type: int) -> str:
    try:
        return abi.DLDeviceType(device_type).name
    except ValueError:
        return f"DLPack device type {device_type}"


class DLPackImport:
    """Owns one consumed DLPack tensor until ``close()`` calls its deleter (once)."""

    def __init__(self, capsule, function: str, argument: str):
        where = f"{function}: {argument}"
        if not abi.is_capsule(capsule):
            raise TypeError(f"{where}: __dlpack__() returned a {type(capsule).__name__}, not a PyCapsule")
        name = abi.capsule_name(capsule)
        if name == b"dltensor_versioned":
            self.versioned = True
        elif name == b"dltensor":
            self.versioned = False
        else:
            raise ValueError(f"{where}: __dlpack__() returned a capsule named {name!r}, not 'dltensor' or "
                             "'dltensor_versioned' (a capsule can be consumed only once)")
        self._managed = abi.capsule_get_pointer(capsule, abi.name_ptr(name))
        if not self._managed:
            raise ValueError(f"{where}: __dlpack__() returned a capsule holding a null pointer")
        # Take ownership: from here on we, not the capsule's destructor, must call the deleter.
        abi.capsule_set_name(capsule, abi.name_ptr(b"used_" + name))
        self._capsule = capsule
        self._closed = False
        if self.versioned:
            version = abi.DLPackVersion.from_address(self._managed)
            major, minor = int(version.major), int(version.minor)  # read before the deleter frees them
            if major != abi.DLPACK_MAJOR:
                # Only the version and deleter may be read from a tensor of another major version.
                self.close()
                raise ValueError(f"{where}: the producer exported DLPack {major}.{minor}; "
                                 f"knetcnn reads DLPack {abi.DLPACK_MAJOR}.x")
            self.struct = abi.DLManagedTensorVersioned.from_address(self._managed)
            self.readonly = bool(self.struct.flags & abi.FLAG_READ_ONLY)
        else:
            self.struct = abi.DLManagedTensor.from_address(self._managed)
            self.readonly = False

    def _deleter_address(self) -> int | None:
        offset = abi.VERSIONED_DELETER_OFFSET if self.versioned else abi.DLManagedTensor.deleter.offset
        return ctypes.c_void_p.from_address(self._managed + offset).value

    def close(self) -> None:
        """Call the producer's deleter (once); after this the memory may be gone."""
        if self._closed:
            return
        self._closed = True
        deleter = self._deleter_address()
        self.struct = None
        if deleter:
            abi.DELETER_CALL_WITH_GIL(deleter)(self._managed)

    def __del__(self):
        if not getattr(self, "_closed", True) and not sys.is_finalizing():
            self.close()


def _read_view(imported: DLPackImport, function: str, argument: str) -> ArrayView:
    where = f"{function}: {argument}"
    tensor = imported.struct.dl_tensor
    ndim = tensor.ndim
    if not 0 <= ndim <= abi.MAX_NDIM:
        raise ValueError(f"{where}: the DLPack tensor has ndim={ndim}")
    dtype = DLPACK_CODES.get((tensor.dtype.code, tensor.dtype.bits)) if tensor.dtype.lanes == 1 else None
    if dtype is None:
        raise refuse_dtype(function, argument, dlpack_type_text(tensor.dtype.code, tensor.dtype.bits,
                                                                tensor.dtype.lanes))
    if ndim and not tensor.shape:
        raise ValueError(f"{where}: the DLPack tensor has ndim={ndim} but a null shape pointer")
    shape = tuple(int(tensor.shape[i]) for i in range(ndim))
    if any(s < 0 for s in shape):
        raise ValueError(f"{where}: the DLPack tensor has shape {shape} with a negative extent")
    if tensor.strides:  # in elements; NULL means C-contiguous
        strides = tuple(int(tensor.strides[i]) for i in range(ndim))
        if any(st < 0 and ex > 1 for st, ex in zip(strides, shape)):
            raise ValueError(f"{where}: the DLPack tensor has negative strides {strides} (a reversed view), which "
                             "are not supported; make a contiguous copy first")
        strides = canonical_strides(shape, strides)
    else:
        strides = c_contiguous_strides(shape)
    data = tensor.data or 0
    if data == 0 and math.prod(shape):
        raise ValueError(f"{where}: the DLPack tensor has a null data pointer for shape {shape}")
    device_type = tensor.device.device_type
    if device_type not in abi.CUDA_DEVICE_TYPES:
        raise ValueError(f"{where}: the DLPack tensor lives on {_device_text(device_type)}, not a CUDA device")
    ptr = data + int(tensor.byte_offset)
    check_pointer(ptr, ITEMSIZE[dtype], dtype, f"{where}: the DLPack tensor has")
    return ArrayView(ptr=ptr, shape=shape, strides=strides, dtype=dtype,
                     device=int(tensor.device.device_id), readonly=imported.readonly, source="dlpack",
                     managed=device_type == abi.DLDeviceType.kDLCUDAManaged)


def _call_dlpack(obj, stream: int, function: str, argument: str):
    """``obj.__dlpack__`` asking for a versioned tensor first, as the specification recommends.

    A producer that cannot export (BufferError, TypeError: e.g. a tensor that requires grad, an
    unsupported dtype) is the caller's mistake, so a TypeError naming the argument; any other
    failure a ValueError. The producer's exception stays attached as ``__cause__``.
    """
    protocol_stream = streams.to_protocol(stream)
    try:
        try:
            return obj.__dlpack__(stream=protocol_stream, max_version=(abi.DLPACK_MAJOR, abi.DLPACK_MINOR))
        except TypeError:  # a producer from before DLPack 1.0 (no max_version keyword)
            return obj.__dlpack__(stream=protocol_stream)
    except Exception as error:
        kind = TypeError if isinstance(error, (BufferError, TypeError)) else ValueError
        raise kind(f"{function}: {argument} ({type(obj).__name__}): its __dlpack__() refused: "
                   f"{type(error).__name__}: {error}") from error


def import_dlpack(obj, function: str, argument: str, stream: int) -> ArrayView:
    """A view of a CUDA array offered through DLPack; our work will run on ``stream``.

    ``__dlpack__`` runs with the array's device current: the producer records the events that
    order ``stream`` after its work on the current device. The view's closer calls the tensor's
    deleter, once ``view.release()`` has seen our work on it complete.
    """
    device_type, device_id = dlpack_device(obj, function, argument)
    if device_type not in abi.CUDA_DEVICE_TYPES:
        raise ValueError(f"{function}: {argument} ({type(obj).__name__}) lives on {_device_text(device_type)}, "
                         "not a CUDA device")
    with rt.using_device(device_id):
        capsule = _call_dlpack(obj, stream, function, argument)
    imported = DLPackImport(capsule, function, argument)
    try:
        view = _read_view(imported, function, argument)
        if (view.device, int(view.managed)) != (device_id, int(device_type == abi.DLDeviceType.kDLCUDAManaged)):
            raise ValueError(f"{function}: {argument}: __dlpack_device__() said ({device_type}, {device_id}) but "
                             f"the tensor says ({imported.struct.dl_tensor.device.device_type}, {view.device})")
    except BaseException:
        imported.close()
        raise
    view.owner = obj
    view.consumer_stream = stream
    view._closers.append(imported.close)
    return view
