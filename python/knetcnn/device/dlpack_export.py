"""Producing DLPack capsules (``DLManagedTensor`` / ``DLManagedTensorVersioned``) with ctypes.

Lifetimes, which is where this can go wrong:

* Each export owns a ctypes structure plus shape/strides arrays, and a reference to the object
  that owns the memory (a KnetArray, or a NumPy copy). These sit in ``_LIVE`` keyed by the
  structure's address until the deleter is called, exactly once, by whoever owns the tensor:
  the consumer after renaming the capsule, or the capsule's destructor if nobody consumed it.
* The deleter and the capsule destructor are ctypes callbacks that C code may call at any time,
  from any thread; both are module-level objects with a leaked reference, so they are never
  freed while the process runs.
* The capsule destructor takes the capsule as a raw address (not a Python object): it runs while
  the capsule is being deallocated.

Known limit: these callbacks are Python code, so a capsule destroyed while a Python exception is
pending (a consumer failing mid-import) cannot run its cleanup; CPython then reports the failure
as unraisable and the export leaks. A C destructor would not have this limit.
"""

from __future__ import annotations

import ctypes
from typing import Any

from . import dlpack_abi as abi
from .dtypes import DLPACK_OF

_LIVE: dict[int, tuple[Any, ...]] = {}  # struct address -> (struct, shape, strides, owner)


def _release(managed_address: int) -> None:
    """The DLManagedTensor(Versioned) deleter: drop everything this export holds."""
    entry = _LIVE.pop(managed_address, None)
    del entry  # frees the struct and arrays, and drops the owner (a KnetArray may free its memory)


_DELETER = abi.DELETER(_release)
abi.leak_reference(_DELETER)
_DELETER_ADDRESS = ctypes.cast(_DELETER, ctypes.c_void_p).value


def _capsule_destructor(capsule_address: int) -> None:
    """Runs when a capsule dies. Calls the deleter only if nobody consumed (renamed) the capsule."""
    for name in (b"dltensor", b"dltensor_versioned"):
        if abi.capsule_is_valid_at(capsule_address, abi.name_ptr(name)):
            managed = abi.capsule_get_pointer_at(capsule_address, abi.name_ptr(name))
            _release(managed)
            return


_CAPSULE_DESTRUCTOR = abi.CAPSULE_DESTRUCTOR(_capsule_destructor)
abi.leak_reference(_CAPSULE_DESTRUCTOR)


def live_exports() -> int:
    """How many exported tensors have not had their deleter called (for tests and leak checks)."""
    return len(_LIVE)


def export_capsule(*, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str,
                   device_type: int, device_id: int, owner: Any, versioned: bool,
                   readonly: bool = False, copied: bool = False):
    """A new capsule named "dltensor" (or "dltensor_versioned") describing the given memory.

    ``strides`` are in elements. ``owner`` is kept alive until the tensor's deleter runs.
    """
    code, bits = DLPACK_OF[dtype]
    ndim = len(shape)
    shape_array = (ctypes.c_int64 * max(ndim, 1))(*shape)
    strides_array = (ctypes.c_int64 * max(ndim, 1))(*strides)
    if versioned:
        managed = abi.DLManagedTensorVersioned()
        managed.version.major, managed.version.minor = abi.DLPACK_MAJOR, abi.DLPACK_MINOR
        managed.flags = (abi.FLAG_READ_ONLY if readonly else 0) | (abi.FLAG_IS_COPIED if copied else 0)
        name = b"dltensor_versioned"
    else:
        managed = abi.DLManagedTensor()
        name = b"dltensor"
    tensor = managed.dl_tensor
    tensor.data = ptr or None
    tensor.device.device_type, tensor.device.device_id = int(device_type), int(device_id)
    tensor.ndim = ndim
    tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes = code, bits, 1
    tensor.shape = ctypes.cast(shape_array, ctypes.POINTER(ctypes.c_int64))
    tensor.strides = ctypes.cast(strides_array, ctypes.POINTER(ctypes.c_int64))
    tensor.byte_offset = 0
    managed.manager_ctx = None
    managed.deleter = _DELETER_ADDRESS
    address = ctypes.addressof(managed)
    _LIVE[address] = (managed, shape_array, strides_array, owner)
    try:
        return abi.capsule_new(address, abi.name_ptr(name), _CAPSULE_DESTRUCTOR)
    except BaseException:
        _LIVE.pop(address, None)
        raise
