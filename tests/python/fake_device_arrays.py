"""Fake device-array producers over host (NumPy) memory, for testing parsing without a GPU.

They claim to be CUDA arrays; their pointers are host addresses. They are only ever parsed,
never computed on. The DLPack fake builds real capsules with its own deleter (independent of
knetcnn's exporter), counts how often the deleter runs, and fills the structure with 0xFF when it
does, so that a consumer reading it afterwards gets garbage (and fails a test) instead of stale data.
"""

from __future__ import annotations

import ctypes

import numpy as np

from knetcnn.device import dlpack_abi as abi


class FakeCAI:
    """Exposes ``__cuda_array_interface__`` = the given dict, and optionally a ``dtype``."""

    def __init__(self, cai: dict, dtype=None, dlpack_device=(2, 0), keep=None):
        self._cai, self._keep, self._dlpack_device = cai, keep, dlpack_device
        if dtype is not None:
            self.dtype = dtype

    @property
    def __cuda_array_interface__(self):
        return self._cai


class FakeCAIWithDevice(FakeCAI):
    """A CAI producer that also reports its device through ``__dlpack_device__`` (but has no ``__dlpack__``)."""

    def __dlpack_device__(self):
        return self._dlpack_device


def cai_of(array: np.ndarray, **overrides) -> dict:
    """The CAI dict NumPy's own ``__array_interface__`` would give, as version 3, with overrides."""
    interface = array.__array_interface__
    cai = {"shape": array.shape, "typestr": interface["typestr"], "data": interface["data"],
           "strides": interface["strides"], "version": 3, "stream": None}
    cai.update(overrides)
    return cai


class FakeDLPack:
    """A CUDA-claiming DLPack producer over a NumPy array, building its own capsules.

    ``versioned``: answer ``max_version`` with a DLManagedTensorVersioned (else refuse the keyword
    like a pre-1.0 producer when ``legacy_only``). Records the keywords of every ``__dlpack__`` call.
    """

    def __init__(self, array: np.ndarray, *, device=(2, 0), tensor_device=None, versioned=True, legacy_only=False,
                 code=None, bits=None, lanes=1, byte_offset=0, strides="numpy", flags=0, major=1, shape=None):
        self.array = array
        self.device = device
        self.tensor_device = tensor_device or device
        self.versioned, self.legacy_only = versioned, legacy_only
        self.code, self.bits, self.lanes = code, bits, lanes
        self.byte_offset, self.strides, self.flags, self.major = byte_offset, strides, flags, major
        self.shape = shape
        self.calls: list[dict] = []
        self.deleted = 0
        self._keep: dict[int, tuple] = {}
        self._deleter = abi.DELETER(self._on_delete)

    def _on_delete(self, address):
        self.deleted += 1
        kept = self._keep.pop(address, None)
        if kept is not None:  # poison what the consumer may no longer read, as a freeing producer would
            managed, shape_array, strides_array, _ = kept
            ctypes.memset(address, 0xFF, ctypes.sizeof(managed))
            for array in (shape_array, strides_array):
                if array is not None:
                    ctypes.memset(ctypes.addressof(array), 0xFF, ctypes.sizeof(array))

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, *, stream=None, **keywords):
        if self.legacy_only and keywords:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        self.calls.append({"stream": stream, **keywords})
        a = self.array
        use_versioned = self.versioned and keywords.get("max_version") is not None
        managed = abi.DLManagedTensorVersioned() if use_versioned else abi.DLManagedTensor()
        if use_versioned:
            managed.version.major, managed.version.minor = self.major, 0
            managed.flags = self.flags
        shape = self.shape if self.shape is not None else a.shape
        shape_array = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        t = managed.dl_tensor
        t.data = a.ctypes.data - self.byte_offset if a.size else None
        t.byte_offset = self.byte_offset
        t.device.device_type, t.device.device_id = self.tensor_device
        t.ndim = len(shape)
        t.dtype.code = self.code if self.code is not None else (2 if a.dtype.kind == "f" else 0)
        t.dtype.bits = self.bits if self.bits is not None else a.dtype.itemsize * 8
        t.dtype.lanes = self.lanes
        t.shape = ctypes.cast(shape_array, ctypes.POINTER(ctypes.c_int64))
        strides_array = None
        if self.strides == "numpy":
            strides_array = (ctypes.c_int64 * max(a.ndim, 1))(*(s // a.itemsize for s in a.strides))
        elif self.strides is not None:
            strides_array = (ctypes.c_int64 * max(len(self.strides), 1))(*self.strides)
        t.strides = ctypes.cast(strides_array, ctypes.POINTER(ctypes.c_int64)) if strides_array is not None else None
        managed.manager_ctx = None
        managed.deleter = ctypes.cast(self._deleter, ctypes.c_void_p).value
        address = ctypes.addressof(managed)
        self._keep[address] = (managed, shape_array, strides_array, a)
        name = b"dltensor_versioned" if use_versioned else b"dltensor"
        return _capsule_new(address, abi.name_ptr(name), None)


_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))


def dlpack_bfloat16(shape=(2, 3), **keywords) -> FakeDLPack:
    """A bfloat16 producer: 2-byte elements (stored as uint16), DLPack code kDLBfloat."""
    return FakeDLPack(np.zeros(shape, np.uint16), code=4, bits=16, **keywords)
