"""``knetcnn.KnetArray``: a small C-contiguous array in CUDA device memory, as Knet's KnetArray.

``KnetArray(a)`` copies a host array to the GPU, ``k.get()`` / ``np.asarray(k)`` copy it back.
It exports itself through ``__cuda_array_interface__`` (v3) and DLPack, so CuPy, PyTorch, JAX
and Numba can use it without a copy. It is not a NumPy clone: no arithmetic or indexing.
``copy.copy(k)`` shares the memory (like ``reshape``); ``copy.deepcopy(k)`` and pickling copy it.

Memory comes from ``cudaMalloc`` (see ``allocation``): freed once the last reference (including
views from ``reshape`` and exported DLPack tensors) is gone and the work knetcnn enqueued on it
has completed, at the next safe point; nothing is freed during interpreter shutdown, when the
process's device memory goes anyway. Later work, ``get()``, and CUDA Array Interface and DLPack
consumers are ordered after that pending work.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from . import cuda_runtime as rt
from . import dlpack_abi as abi
from . import events, safepoints, streams
from .allocation import Allocation, new_allocation
from .array_view import ArrayView, c_contiguous_strides
from .dlpack_export import export_capsule
from .dtypes import ITEMSIZE, dtype_name, numpy_dtype


def _is_device_object(obj) -> bool:
    """Whether ``obj`` lives on a GPU (the same rules as ``device.is_device_array``)."""
    if isinstance(obj, (KnetArray, np.ndarray)):
        return isinstance(obj, KnetArray)
    if getattr(type(obj), "__dlpack_device__", None) is not None:
        try:
            return int(obj.__dlpack_device__()[0]) in abi.CUDA_DEVICE_TYPES
        except Exception:
            pass
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except Exception:  # e.g. a CUDA tensor that requires grad refuses to export: still a device array
        return True


def _shape_arg(shape, function: str) -> tuple[int, ...]:
    if hasattr(type(shape), "__index__") and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{function}: shape={shape!r}: shape must be an int or a sequence of ints")
    out = []
    for s in shape:
        if isinstance(s, bool) or not hasattr(type(s), "__index__"):
            raise TypeError(f"{function}: shape={shape!r}: shape must hold ints, not {type(s).__name__}")
        out.append(operator.index(s))
    if any(s < 0 for s in out):
        raise ValueError(f"{function}: shape={tuple(out)}: extents must be >= 0")
    return tuple(out)


def _device_arg(device, function: str) -> int:
    if isinstance(device, bool) or not hasattr(type(device), "__index__"):
        raise TypeError(f"{function}: device={device!r}: device must be a GPU index (int)")
    index = operator.index(device)
    if index < 0:
        raise ValueError(f"{function}: device={index}: device must be >= 0")
    return index


class KnetArray:
    """A C-contiguous float16/float32/float64/bfloat16 array in GPU memory.

    ``KnetArray(a, dtype=None, device=0)`` copies the host array ``a`` (anything ``np.asarray``
    accepts) to ``device``; ``dtype`` converts on the host first. Needs a usable GPU: without one
    it raises ``knetcnn.DeviceUnavailableError`` saying why.
    """

    __slots__ = ("_alloc", "_shape", "_dtype", "__weakref__")

    def __init__(self, array, dtype=None, device: int = 0):
        function = "KnetArray"
        device = _device_arg(device, function)
        if _is_device_object(array):
            raise TypeError(f"{function}: a is a device array ({type(array).__name__}); KnetArray(a) copies "
                            "host arrays: pass the device array to knetcnn directly, or copy it to the host first")
        host = np.asarray(array)
        if dtype is None and host.dtype.name not in ("float16", "float32", "float64", "bfloat16"):
            raise TypeError(f"{function}: a has dtype {host.dtype.name}; a KnetArray holds float16, float32, "
                            "float64 or bfloat16: pass dtype='float32' (or another) to convert")
        name = dtype_name(host.dtype if dtype is None else dtype, function)
        host = np.ascontiguousarray(host, dtype=numpy_dtype(name, function))
        rt.require_device(device, function)
        safepoints.drain()
        self._init(new_allocation(host.nbytes, device), host.shape, name)
        if host.nbytes:
            rt.memcpy(self._alloc.ptr, host.ctypes.data, host.nbytes, rt.MEMCPY_H2D, streams.LEGACY, device)

    def _init(self, alloc: Allocation, shape: tuple[int, ...], name: str) -> None:
        self._alloc, self._shape, self._dtype = alloc, tuple(shape), name

    @classmethod
    def _wrap(cls, ptr: int, shape, dtype, device: int = 0, owner=None) -> "KnetArray":
        """A KnetArray over memory it does not own (kept alive through ``owner``). For views and tests."""
        self = object.__new__(cls)
        name = dtype_name(dtype, "KnetArray")
        self._init(Allocation(ptr, math.prod(shape) * ITEMSIZE[name], device, owns=False, owner=owner),
                   tuple(shape), name)
        return self

    @classmethod
    def empty(cls, shape, dtype="float32", device: int = 0) -> "KnetArray":
        """Uninitialized device memory of ``shape`` and ``dtype`` on ``device``."""
        function = "KnetArray.empty"
        shape, device = _shape_arg(shape, function), _device_arg(device, function)
        name = dtype_name(dtype, function)
        if name == "bfloat16":
            numpy_dtype(name, function)  # refuse early without ml_dtypes: get() could not return it
        rt.require_device(device, function)
        safepoints.drain()
        self = object.__new__(cls)
        self._init(new_allocation(math.prod(shape) * ITEMSIZE[name], device), shape, name)
        return self

    @classmethod
    def zeros(cls, shape, dtype="float32", device: int = 0) -> "KnetArray":
        """Device memory of ``shape`` and ``dtype`` set to zero (all-zero bits are 0.0 in every dtype)."""
        self = cls.empty(shape, dtype, device)
        if self.nbytes:
            rt.memset_async(self.ptr, 0, self.nbytes, streams.LEGACY, self.device)
            self._alloc.add(events.Event.record(streams.LEGACY, self.device))
        return self

    # --- properties -------------------------------------------------------------------------
    shape = property(lambda self: self._shape)
    ndim = property(lambda self: len(self._shape))
    size = property(lambda self: math.prod(self._shape))
    itemsize = property(lambda self: ITEMSIZE[self._dtype])
    nbytes = property(lambda self: self.size * self.itemsize)
    device = property(lambda self: self._alloc.device, doc="CUDA device ordinal")
    ptr = property(lambda self: self._alloc.ptr, doc="device address of the first element (0 when empty)")

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self._dtype, "KnetArray.dtype")

    @property
    def strides(self) -> tuple[int, ...]:
        """Byte strides, as NumPy reports them (always C-contiguous)."""
        return tuple(s * self.itemsize for s in c_contiguous_strides(self._shape))

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d KnetArray")
        return self._shape[0]

    def __repr__(self) -> str:
        return (f"KnetArray(shape={self._shape}, dtype={self._dtype}, device={self.device}, "
                f"ptr={self.ptr:#x})")

    # --- copies back to the host ----------------------------------------------------------------
    def get(self) -> np.ndarray:
        """A NumPy copy, made after all work knetcnn enqueued on this array has finished."""
        out = np.empty(self._shape, dtype=numpy_dtype(self._dtype, "KnetArray.get"))
        if out.nbytes:
            rt.require_device(self.device, "KnetArray.get")
            with rt.naming("KnetArray.get"):
                safepoints.drain()
                self._alloc.wait()
                rt.memcpy(out.ctypes.data, self.ptr, out.nbytes, rt.MEMCPY_D2H, streams.LEGACY, self.device)
        return out

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("KnetArray: np.asarray(k, copy=False): device memory cannot be viewed from the host; "
                             "a copy is always made")
        out = self.get()
        return out if dtype is None else out.astype(dtype, copy=False)

    def copy(self) -> "KnetArray":
        """A new device array with the same contents (copied once pending work has completed)."""
        out = KnetArray.empty(self._shape, self._dtype, self.device)
        if self.nbytes:
            with rt.naming("KnetArray.copy"):
                self._alloc.order(streams.LEGACY)
                rt.memcpy(out.ptr, self.ptr, self.nbytes, rt.MEMCPY_D2D, streams.LEGACY, self.device)
        return out

    # copy.copy shares the memory (as reshape does); copy.deepcopy and pickle copy the contents.
    # Without these, both would copy the slots and a second finalizer would free the memory twice.
    def __copy__(self) -> "KnetArray":
        view = object.__new__(KnetArray)
        view._init(self._alloc, self._shape, self._dtype)
        return view

    def __deepcopy__(self, memo) -> "KnetArray":
        return self.copy()

    def __reduce__(self):
        return (KnetArray, (self.get(), None, self.device))

    # --- views --------------------------------------------------------------------------------
    def reshape(self, *shape) -> "KnetArray":
        """A view with a new shape (same memory, C order); one extent may be -1."""
        function = "KnetArray.reshape"
        if len(shape) == 1 and not hasattr(type(shape[0]), "__index__"):
            shape = shape[0]
        items = []
        for s in shape:
            if isinstance(s, bool) or not hasattr(type(s), "__index__"):
                raise TypeError(f"{function}: shape={shape!r}: shape must hold ints, not {type(s).__name__}")
            items.append(operator.index(s))
        if items.count(-1) > 1 or any(s < -1 for s in items):
            raise ValueError(f"{function}: shape={tuple(items)}: extents must be >= 0, with at most one -1")
        if -1 in items:
            known = math.prod(s for s in items if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"{function}: cannot reshape {self._shape} ({self.size} elements) to {tuple(items)}")
            items[items.index(-1)] = self.size // known
        if math.prod(items) != self.size:
            raise ValueError(f"{function}: cannot reshape {self._shape} ({self.size} elements) to {tuple(items)}")
        view = object.__new__(KnetArray)
        view._init(self._alloc, tuple(items), self._dtype)
        return view

    # --- interchange --------------------------------------------------------------------------
    @property
    def __cuda_array_interface__(self) -> dict:
        # Pending work is exported as the legacy default stream made to wait for it: the consumer
        # orders itself after that stream, and no stream of ours or a caller's is handed out.
        stream = None
        if self._alloc.outstanding():
            self._alloc.order(streams.LEGACY)
            stream = streams.PROTOCOL_LEGACY
        return {
            "shape": self._shape,
            # bfloat16 has no typestr; "<V2" (ml_dtypes' spelling) at least never reads as float16.
            "typestr": "<V2" if self._dtype == "bfloat16" else np.dtype(self._dtype).str,
            "data": (self.ptr if self.size else 0, False),
            "strides": None,
            "version": 3,
            "stream": stream,
        }

    def __dlpack_device__(self) -> tuple[abi.DLDeviceType, int]:
        return (abi.DLDeviceType.kDLCUDA, self.device)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export as a DLPack capsule (see the Python array API standard for the arguments).

        ``stream`` is the consumer's: None or 1 the legacy default stream, 2 the per-thread
        default stream, another int a stream handle, -1 "do not synchronize"; 0 is refused.
        ``dl_device=(kDLCPU, 0)`` exports a host copy; ``copy=True`` a device copy.
        """
        function = "KnetArray.__dlpack__"
        versioned = max_version is not None and tuple(max_version)[0] >= abi.DLPACK_MAJOR
        target = self.__dlpack_device__() if dl_device is None else tuple(dl_device)
        if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int)):
            raise TypeError(f"{function}: stream={stream!r}: stream must be None or an int")
        if stream == 0:
            raise ValueError(f"{function}: stream=0 is disallowed as ambiguous; use 1 (legacy default), "
                             "2 (per-thread default) or a stream handle")
        if stream is not None and stream < -1:
            raise ValueError(f"{function}: stream={stream}: must be -1, 1, 2 or a stream handle")
        if tuple(int(v) for v in target) == (abi.DLDeviceType.kDLCPU, 0):
            if copy is False:
                raise BufferError(f"{function}: dl_device=kDLCPU needs a copy to host memory but copy=False")
            if stream not in (None, -1):
                raise ValueError(f"{function}: stream={stream}: a kDLCPU export takes stream=None")
            host = self.get()
            return export_capsule(ptr=host.ctypes.data, shape=host.shape, strides=c_contiguous_strides(host.shape),
                                  dtype=self._dtype, device_type=abi.DLDeviceType.kDLCPU, device_id=0,
                                  owner=host, versioned=versioned, copied=True)
        if tuple(int(v) for v in target) != (abi.DLDeviceType.kDLCUDA, self.device):
            raise BufferError(f"{function}: dl_device={dl_device!r}: can export to CUDA device {self.device} "
                              "or to kDLCPU (a host copy) only")
        source = self.copy() if copy else self
        if stream != -1:
            source._alloc.order(streams.LEGACY if stream is None else stream)
        return export_capsule(ptr=source.ptr, shape=source.shape, strides=c_contiguous_strides(source.shape),
                              dtype=source._dtype, device_type=abi.DLDeviceType.kDLCUDA, device_id=source.device,
                              owner=source, versioned=versioned, copied=bool(copy))

    # --- for the dispatcher -----------------------------------------------------------------------
    def _view(self, stream: int) -> ArrayView:
        """A view for work on ``stream``, ordered after the work pending on this array; on
        release, the event recorded after our work joins the pending work."""
        alloc = self._alloc
        alloc.order(stream)
        view = ArrayView(ptr=self.ptr, shape=self._shape, strides=c_contiguous_strides(self._shape),
                         dtype=self._dtype, device=alloc.device, consumer_stream=stream, owner=self,
                         source="knetarray")
        view._on_release.append(lambda used, event: alloc.add(event))
        return view
