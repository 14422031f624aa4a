"""Producing DLPack capsules (``DLManagedTensor`` / ``DLManagedTensorVersioned``).

The hard part is lifetime. The tensor's deleter and the capsule's destructor are called by
other libraries from C: at any time, from any thread, and sometimes while a Python exception
is propagating (a consumer that fails after calling ``__dlpack__`` drops our capsule with its
error still set). A Python callback cannot run in that state without destroying the pending
error, so both are C functions where possible:

* **C path** (NumPy >= 2.1, checked at import): NumPy's own capsule destructor and tensor
  deleter, read from a capsule NumPy exports. They implement the specification in C: the
  destructor calls the deleter only for a capsule nobody consumed; the deleter takes the GIL,
  ``PyMem_Free``s the tensor block and drops the reference in ``manager_ctx``. So the tensor is
  one ``PyMem_Malloc`` block (structure, then shape, then strides) and ``manager_ctx`` holds a
  strong reference to the owner (a KnetArray or a NumPy copy). Dropping the owner runs its
  finalizer through CPython's weakref machinery, which preserves a pending exception.
* **ctypes path** (fallback): Python callbacks, kept alive for the life of the process. Correct
  except when a capsule dies while an exception is pending (see above): the cleanup is then
  skipped (the export leaks) and CPython reports an unraisable error.

A C destructor of our own in the compiled core would remove the dependency on NumPy's.
"""

from __future__ import annotations

import ctypes
import sys
import weakref
from typing import Any

import numpy as np

from . import dlpack_abi as abi
from .dtypes import DLPACK_OF

_api = ctypes.pythonapi
_mem_malloc = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)(("PyMem_Malloc", _api))
_mem_free = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("PyMem_Free", _api))
_incref = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_IncRef", _api))
_decref = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_DecRef", _api))
_capsule_new_raw = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ("PyCapsule_New", _api))
_capsule_get_destructor = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(("PyCapsule_GetDestructor", _api))

_NAME = {False: b"dltensor", True: b"dltensor_versioned"}
_STRUCT = {False: abi.DLManagedTensor, True: abi.DLManagedTensorVersioned}
_DELETER_OFFSET = {False: abi.DLManagedTensor.deleter.offset, True: abi.VERSIONED_DELETER_OFFSET}


def _fill(managed, *, ptr, shape, strides, dtype, device_type, device_id, shape_ptr, strides_ptr,
          versioned, readonly, copied) -> None:
    """Write every field except manager_ctx and deleter."""
    code, bits = DLPACK_OF[dtype]
    if versioned:
        managed.version.major, managed.version.minor = abi.DLPACK_MAJOR, abi.DLPACK_MINOR
        managed.flags = (abi.FLAG_READ_ONLY if readonly else 0) | (abi.FLAG_IS_COPIED if copied else 0)
    t = managed.dl_tensor
    t.data = ptr or None
    t.device.device_type, t.device.device_id = int(device_type), int(device_id)
    t.ndim = len(shape)
    t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
    t.shape = ctypes.cast(shape_ptr, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.cast(strides_ptr, ctypes.POINTER(ctypes.c_int64))
    t.byte_offset = 0
    for i, (extent, stride) in enumerate(zip(shape, strides)):
        t.shape[i], t.strides[i] = extent, stride


# --- C path: NumPy's destructor and deleter ------------------------------------------------------

def _export_c(functions, versioned: bool, owner: Any, **fields):
    destructor, deleter = functions[versioned]
    struct = _STRUCT[versioned]
    ndim = len(fields["shape"])
    size = ctypes.sizeof(struct) + 2 * 8 * ndim  # both sizes are multiples of 8: int64s stay aligned
    block = _mem_malloc(size)
    if not block:
        raise MemoryError("knetcnn: PyMem_Malloc failed for a DLPack tensor")
    ctypes.memset(block, 0, size)
    managed = struct.from_address(block)
    shape_ptr = block + ctypes.sizeof(struct) if ndim else None
    strides_ptr = shape_ptr + 8 * ndim if ndim else None
    _fill(managed, shape_ptr=shape_ptr, strides_ptr=strides_ptr, versioned=versioned, **fields)
    managed.manager_ctx = id(owner)
    managed.deleter = deleter
    _incref(owner)  # released by the deleter
    try:
        return _capsule_new_raw(block, abi.name_ptr(_NAME[versioned]), destructor)
    except BaseException:
        _decref(owner)
        _mem_free(block)
        raise


def _numpy_functions(versioned: bool):
    """(capsule destructor, tensor deleter) of a capsule NumPy exports, or None."""
    try:
        capsule = np.empty(1, np.float32).__dlpack__(**({"max_version": (1, 0)} if versioned else {}))
    except (TypeError, BufferError):
        return None
    if abi.capsule_name(capsule) != _NAME[versioned]:
        return None
    destructor = _capsule_get_destructor(capsule)
    managed = abi.capsule_get_pointer(capsule, abi.name_ptr(_NAME[versioned]))
    deleter = ctypes.c_void_p.from_address(managed + _DELETER_OFFSET[versioned]).value
    return (destructor, deleter) if destructor and deleter else None  # the probe capsule cleans up itself


class _Probe:
    pass


def _behaves(functions, versioned: bool) -> bool:
    """Check the borrowed functions do what the C path relies on, on throwaway exports."""
    fields = dict(ptr=0, shape=(0,), strides=(1,), dtype="float32", device_type=1, device_id=0,
                  readonly=False, copied=False)
    unraisable = []
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        owner = _Probe()
        ref = weakref.ref(owner)
        capsule = _export_c(functions, versioned, owner, **fields)
        del owner
        alive_while_held = ref() is not None
        del capsule  # never consumed: the destructor must call the deleter
        released_by_destructor = ref() is None
        owner = _Probe()
        ref = weakref.ref(owner)
        capsule = _export_c(functions, versioned, owner, **fields)
        del owner
        managed = abi.capsule_get_pointer(capsule, abi.name_ptr(_NAME[versioned]))
        abi.capsule_set_name(capsule, abi.name_ptr(b"used_" + _NAME[versioned]))
        abi.DELETER_CALL_WITH_GIL(functions[versioned][1])(managed)  # as a consumer would
        released_by_deleter = ref() is None
        del capsule  # consumed: the destructor must do nothing
    finally:
        sys.unraisablehook = previous_hook
    return alive_while_held and released_by_destructor and released_by_deleter and not unraisable


def _borrow_numpy_functions():
    if np.lib.NumpyVersion(np.__version__) < "2.1.0":  # earlier deleters do not take the GIL themselves
        return None
    functions = {}
    for versioned in (False, True):
        found = _numpy_functions(versioned)
        if found is not None:
            functions[versioned] = found
            if not _behaves(functions, versioned):
                del functions[versioned]
    return functions or None


# --- ctypes path -------------------------------------------------------------------------------------

_LIVE: dict[int, tuple[Any, ...]] = {}  # struct address -> (struct, shape, strides, owner)


def _release(managed_address: int) -> None:
    """The ctypes-path DLManagedTensor(Versioned) deleter: drop everything this export holds."""
    entry = _LIVE.pop(managed_address, None)
    del entry  # frees the struct and arrays, and drops the owner


_DELETER = abi.DELETER(_release)
abi.leak_reference(_DELETER)  # C code may call it at any time: never free it
_DELETER_ADDRESS = ctypes.cast(_DELETER, ctypes.c_void_p).value


def _capsule_destructor(capsule_address: int) -> None:
    """Runs when a ctypes-path capsule dies; calls the deleter only if nobody consumed it."""
    for name in _NAME.values():
        if abi.capsule_is_valid_at(capsule_address, abi.name_ptr(name)):
            _release(abi.capsule_get_pointer_at(capsule_address, abi.name_ptr(name)))
            return


_CAPSULE_DESTRUCTOR = abi.CAPSULE_DESTRUCTOR(_capsule_destructor)
abi.leak_reference(_CAPSULE_DESTRUCTOR)


def _export_ctypes(versioned: bool, owner: Any, **fields):
    ndim = len(fields["shape"])
    managed = _STRUCT[versioned]()
    shape_array = (ctypes.c_int64 * max(ndim, 1))()
    strides_array = (ctypes.c_int64 * max(ndim, 1))()
    _fill(managed, shape_ptr=ctypes.addressof(shape_array) if ndim else None,
          strides_ptr=ctypes.addressof(strides_array) if ndim else None, versioned=versioned, **fields)
    managed.manager_ctx = None
    managed.deleter = _DELETER_ADDRESS
    address = ctypes.addressof(managed)
    _LIVE[address] = (managed, shape_array, strides_array, owner)
    try:
        return abi.capsule_new(address, abi.name_ptr(_NAME[versioned]), _CAPSULE_DESTRUCTOR)
    except BaseException:
        _LIVE.pop(address, None)
        raise


# --- entry point ---------------------------------------------------------------------------------------

C_FUNCTIONS = _borrow_numpy_functions()  # {versioned: (destructor, deleter)} or None


def export_mode() -> str:
    """'c' when exports use C cleanup functions, 'ctypes' otherwise."""
    return "c" if C_FUNCTIONS else "ctypes"


def live_ctypes_exports() -> int:
    """ctypes-path tensors whose deleter has not run (for tests and leak checks)."""
    return len(_LIVE)


def export_capsule(*, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str,
                   device_type: int, device_id: int, owner: Any, versioned: bool,
                   readonly: bool = False, copied: bool = False):
    """A new capsule named "dltensor" (or "dltensor_versioned") describing the given memory.

    ``strides`` are in elements. ``owner`` is kept alive until the tensor's deleter runs. Where
    only the legacy structure has C cleanup, a versioned request gets the legacy one (allowed:
    consumers must check the capsule's name).
    """
    fields = dict(ptr=ptr, shape=tuple(shape), strides=tuple(strides), dtype=dtype, device_type=device_type,
                  device_id=device_id, readonly=readonly, copied=copied)
    functions = C_FUNCTIONS
    if functions:
        use_versioned = versioned and True in functions
        if use_versioned or False in functions:
            return _export_c(functions, use_versioned, owner, **fields)
    return _export_ctypes(versioned, owner, **fields)
