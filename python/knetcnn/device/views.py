"""The dispatcher's entry points: is this a device array, and its ArrayView.

Which protocol is used, in order: our own KnetArray; DLPack when the object offers both
``__dlpack__`` and a CUDA ``__dlpack_device__`` (it names bfloat16 exactly, and hands over a
reference that keeps the memory alive); ``__cuda_array_interface__`` otherwise (Numba, older
producers).
"""

from __future__ import annotations

import numpy as np

from . import cuda_runtime as rt
from . import dlpack_abi as abi
from . import safepoints, streams
from .array_view import ArrayView
from .cai import declared_dtype_name, parse_cai
from .dlpack_import import dlpack_device, import_dlpack
from .knet_array import KnetArray
from .libraries import order_library_after

_HOST_DLPACK_DEVICES = (abi.DLDeviceType.kDLCPU, abi.DLDeviceType.kDLCUDAHost)


def _dlpack_device_type(obj) -> int | None:
    """The DLPack device type the object reports, or None when it reports none."""
    method = getattr(type(obj), "__dlpack_device__", None)
    if method is None:
        return None
    try:
        device = obj.__dlpack_device__()
        return int(device[0])
    except Exception:
        return None


def _has_cai(obj) -> bool:
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except Exception:  # the property exists but refuses (a CUDA tensor that requires grad)
        return True


def is_device_array(obj) -> bool:
    """True for a KnetArray, an object whose ``__dlpack_device__()`` is CUDA or CUDA-managed, or
    one with ``__cuda_array_interface__``; False for NumPy arrays and host (CPU) DLPack arrays."""
    if isinstance(obj, KnetArray):
        return True
    if isinstance(obj, np.ndarray):
        return False
    device_type = _dlpack_device_type(obj)
    if device_type is not None:
        return device_type in abi.CUDA_DEVICE_TYPES
    return _has_cai(obj)


def array_kind(obj) -> str:
    """'device' (see is_device_array), 'host' (NumPy or a host DLPack/array-interface array) or 'other'."""
    if is_device_array(obj):
        return "device"
    if isinstance(obj, np.ndarray) or _dlpack_device_type(obj) in _HOST_DLPACK_DEVICES:
        return "host"
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__array__"):
        return "host"
    return "other"


def require_same_kind(function: str, arrays: dict[str, object]) -> str:
    """'device' or 'host' when all named arrays are of that kind; a TypeError naming them otherwise."""
    kinds = {name: array_kind(a) for name, a in arrays.items()}
    others = [n for n, k in kinds.items() if k == "other"]
    if others:
        name = others[0]
        raise TypeError(f"{function}: {name} is a {type(arrays[name]).__name__}, not an array "
                        "(NumPy, KnetArray, or a CUDA array such as CuPy, PyTorch, JAX or Numba)")
    if len(set(kinds.values())) > 1:
        described = ", ".join(f"{n} is a {k} array ({type(arrays[n]).__name__})" for n, k in kinds.items())
        raise TypeError(f"{function}: {described}: pass all host (NumPy) arrays for the CPU backend or all "
                        "device arrays for cuDNN (KnetArray(a) copies a NumPy array to the GPU)")
    return next(iter(kinds.values()), "host")


def _cai_device(obj, view: ArrayView, function: str, argument: str) -> tuple[int, bool]:
    """The device of CAI memory: what the object says through ``__dlpack_device__``, checked
    against the pointer where a GPU is usable (one cudaPointerGetAttributes), else the pointer's."""
    said = None
    if getattr(type(obj), "__dlpack_device__", None) is not None:
        device_type, device_id = dlpack_device(obj, function, argument)
        if device_type in abi.CUDA_DEVICE_TYPES:
            said = device_id, device_type == abi.DLDeviceType.kDLCUDAManaged
    if view.ptr == 0:  # a zero-size array: no memory to ask about
        if said is not None:
            return said
        raise ValueError(f"{function}: {argument} ({type(obj).__name__}) is a zero-size array (shape {view.shape}) "
                         "with a null pointer: it names no device (no memory to ask CUDA about); knetcnn needs "
                         "non-empty arrays")
    if said is not None and rt.known_device_count() is None:
        return said  # no GPU usable: the pointer cannot be asked (and nothing will run on it)
    try:
        found = rt.pointer_device(view.ptr)
    except ValueError as error:
        raise ValueError(f"{function}: {argument} ({type(obj).__name__}): {error}") from None
    if said is not None and found[0] != said[0]:
        raise ValueError(f"{function}: {argument} ({type(obj).__name__}): __dlpack_device__() says CUDA device "
                         f"{said[0]} but its __cuda_array_interface__ pointer is on device {found[0]}")
    return found


def _from_cai(obj, function: str, argument: str, stream: int) -> ArrayView:
    try:
        cai = obj.__cuda_array_interface__
    except Exception as error:
        raise ValueError(f"{function}: {argument} ({type(obj).__name__}): its __cuda_array_interface__ "
                         f"refused: {type(error).__name__}: {error}") from error
    view = parse_cai(cai, function, argument, declared_dtype_name(obj))
    view.device, view.managed = _cai_device(obj, view, function, argument)
    view.consumer_stream = stream
    view.owner = obj  # the interface holds no reference of its own: keep the producer alive
    producer, device = view.producer_stream, view.device
    # Consume on our stream: it waits for the producer's, and on release the producer's waits for ours.
    streams.order_after(stream, producer, device)
    if producer is not None:
        view._on_release.append(lambda used, event: None if streams.same(producer, used) else event.wait_on(producer))
    return view


def as_device_view(obj, function: str, argument: str, stream=None) -> ArrayView:
    """An ArrayView of device array ``obj`` for work that will run on ``stream``.

    ``function``/``argument`` name the caller in error messages (CUDA failures too). ``stream``:
    None (legacy default), a handle, or a stream object (see ``streams.as_handle``). Work enqueued
    on ``stream`` after this returns is ordered after the producer's pending work. Call
    ``view.release(stream)`` once the work is enqueued (``enqueued=False`` if it never was).
    Raises TypeError/ValueError for arrays knetcnn cannot use. A safe point (``safepoints``).
    """
    handle = streams.as_handle(stream, function)
    where = f"{function}: {argument}"
    with rt.naming(where):
        safepoints.drain()
        view = _view_of(obj, function, argument, handle)
    view.where = where
    return view


def _view_of(obj, function: str, argument: str, handle: int) -> ArrayView:
    if isinstance(obj, KnetArray):
        return obj._view(handle)
    if abi.is_capsule(obj):
        raise TypeError(f"{function}: {argument} is a bare DLPack capsule; pass the array itself (an object with "
                        "__dlpack__ and __dlpack_device__) so that streams can be synchronized")
    device_type = _dlpack_device_type(obj)
    if device_type is not None and device_type not in abi.CUDA_DEVICE_TYPES:
        raise TypeError(f"{function}: {argument} ({type(obj).__name__}) is not on a CUDA device (DLPack device "
                        f"type {device_type}); pass NumPy arrays for the CPU backend, or copy it to the GPU")
    if device_type is not None and hasattr(obj, "__dlpack__"):
        view = import_dlpack(obj, function, argument, handle)
        order_library_after(view, obj)
        return view
    if _has_cai(obj):
        return _from_cai(obj, function, argument, handle)
    raise TypeError(f"{function}: {argument} is a {type(obj).__name__}, not a device array (a KnetArray, or an "
                    "object with __cuda_array_interface__ or CUDA __dlpack__)")
