"""Producing DLPack capsules (``DLManagedTensor`` / ``DLManagedTensorVersioned``).

The capsule, the tensor's deleter and the capsule's destructor live in the compiled core
(``csrc/bindings/bind_dlpack.cpp``): they are called by other libraries from C, on any thread and
sometimes while a Python exception is pending, which only C code can handle correctly. The
tensor holds a strong reference to ``owner`` (a KnetArray, or a host copy) until its deleter runs.
"""

from __future__ import annotations

from typing import Any

from .._core import core
from . import dlpack_abi as abi
from .dtypes import DLPACK_OF


def export_capsule(*, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str,
                   device_type: int, device_id: int, owner: Any, versioned: bool,
                   readonly: bool = False, copied: bool = False):
    """A new capsule named "dltensor" (or "dltensor_versioned") describing the given memory.

    ``strides`` are in elements. ``device_type`` is kDLCUDA, or kDLCPU for host copies.
    """
    code, bits = DLPACK_OF[dtype]
    flags = (abi.FLAG_READ_ONLY if readonly else 0) | (abi.FLAG_IS_COPIED if copied else 0)
    return core.dlpack_capsule(ptr, list(shape), list(strides), code, bits, int(device_type), int(device_id),
                               owner, versioned, flags)
