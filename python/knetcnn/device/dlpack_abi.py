"""The DLPack C ABI (dlpack.h, v1.x) as ctypes structures, and the PyCapsule calls the importer
needs (exports are built in C++: ``dlpack_export``).

Only layout and constants live here. Capsule names must stay valid for as long as any capsule
carries them, including capsules that outlive this module during interpreter shutdown, so they
are C buffers that are deliberately never freed.
"""

from __future__ import annotations

import ctypes
import enum


class DLDeviceType(enum.IntEnum):
    kDLCPU = 1
    kDLCUDA = 2
    kDLCUDAHost = 3
    kDLOpenCL = 4
    kDLVulkan = 7
    kDLMetal = 8
    kDLVPI = 9
    kDLROCM = 10
    kDLROCMHost = 11
    kDLExtDev = 12
    kDLCUDAManaged = 13
    kDLOneAPI = 14


CUDA_DEVICE_TYPES = (DLDeviceType.kDLCUDA, DLDeviceType.kDLCUDAManaged)
DLPACK_MAJOR = 1
DLPACK_MINOR = 1  # the ABI we read: 1.x only adds enum values, which are checked anyway
FLAG_READ_ONLY = 1 << 0
FLAG_IS_COPIED = 1 << 1
MAX_NDIM = 64  # a sanity bound before reading shape/strides arrays through a producer's pointers


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# void (*deleter)(DLManagedTensor* self): the pointer is passed as a plain address.
DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# The same signature, called with the GIL held (for calling a producer's deleter from Python).
DELETER_CALL_WITH_GIL = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version", DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


# Offsets the producer's ABI promises to keep stable across major versions (version, deleter).
VERSIONED_DELETER_OFFSET = DLManagedTensorVersioned.deleter.offset


def _python_api(name: str, restype, *argtypes):
    """A private ctypes binding of a C-API function, called with the GIL held.

    Private so that no argtypes are set on the shared ``ctypes.pythonapi`` function objects,
    which other libraries may configure differently.
    """
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ctypes.pythonapi))


_incref = _python_api("Py_IncRef", None, ctypes.py_object)

# Capsule names: C strings that are never freed (see the module docstring).
_NAMES = {name: ctypes.create_string_buffer(name) for name in
          (b"dltensor", b"used_dltensor", b"dltensor_versioned", b"used_dltensor_versioned")}
for _buffer in _NAMES.values():
    _incref(_buffer)  # leaked on purpose: the names must outlive every capsule


def name_ptr(name: bytes) -> int:
    return ctypes.addressof(_NAMES[name])


capsule_get_pointer = _python_api("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p)
capsule_set_name = _python_api("PyCapsule_SetName", ctypes.c_int, ctypes.py_object, ctypes.c_void_p)
capsule_get_name = _python_api("PyCapsule_GetName", ctypes.c_char_p, ctypes.py_object)


def is_capsule(obj) -> bool:
    return type(obj).__name__ == "PyCapsule" and type(obj).__module__ == "builtins"


def capsule_name(obj) -> bytes | None:
    """The capsule's current name (None when it has none or is no longer valid)."""
    try:
        return capsule_get_name(obj)
    except ValueError:
        return None
