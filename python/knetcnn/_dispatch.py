"""Where a call runs, decided from its array arguments, and the dtype rules every call shares.

Accepted array arguments:
- NumPy arrays (``numpy.ndarray``, subclasses read as plain arrays, but not masked arrays, whose
  masks would be lost): the call runs on the CPU backend and returns a NumPy array. dtypes
  float16, float32, float64.
- Device arrays: objects with ``__cuda_array_interface__`` (CuPy, Numba, PyTorch CUDA tensors,
  knetcnn.KnetArray) or a ``__dlpack__`` whose ``__dlpack_device__()`` is CUDA or CUDA-managed
  memory (JAX, PyTorch, CuPy). The call runs on cuDNN. dtypes float16, float32, float64, bfloat16.

Anything else -- lists, tuples, Python or NumPy scalars, CPU tensors of other libraries -- is a
``TypeError`` that suggests ``np.asarray``: knetcnn never guesses a dtype or silently copies a
foreign host array. All array arguments of one call must be on the same side (host or device)
and share one dtype; otherwise ``TypeError`` naming the arguments.
"""

from __future__ import annotations

import numpy as np

from . import cpu
from ._device import _device_backend_call
from .device import is_device_array
_HOST_DTYPES = ("float16", "float32", "float64")
_DEVICE_DTYPES = _HOST_DTYPES + ("bfloat16",)

HOST, DEVICE = "host", "device"


def placement(function: str, name: str, a) -> str:
    if isinstance(a, np.ndarray):
        return HOST
    if is_device_array(a):
        return DEVICE
    raise TypeError(
        f"{function}: {name} is a {_describe(a)}: array arguments must be NumPy arrays (use "
        f"np.asarray({name}, dtype=np.float32)) or CUDA device arrays (CuPy, PyTorch CUDA, JAX, Numba, "
        f"knetcnn.KnetArray)"
    )


def _describe(a) -> str:
    t = type(a)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# NumPy computes a dtype's name on every access (~2 us); every call asks for it several times.
_NUMPY_DTYPE_NAMES: dict[np.dtype, str] = {}


def dtype_name(a) -> str:
    """'float32' for NumPy, CuPy, JAX and PyTorch arrays alike."""
    dtype = getattr(a, "dtype", None)
    if isinstance(dtype, np.dtype):
        name = _NUMPY_DTYPE_NAMES.get(dtype)
        if name is None:
            name = _NUMPY_DTYPE_NAMES.setdefault(dtype, dtype.name)
        return name
    if dtype is None and hasattr(a, "__cuda_array_interface__"):
        return np.dtype(a.__cuda_array_interface__["typestr"]).name
    return str(getattr(dtype, "name", dtype)).replace("torch.", "")


# The common case, checked first: plain NumPy arrays of one native float dtype.
_NATIVE_HOST_DTYPES = frozenset(np.dtype(d) for d in ("float16", "float32", "float64"))


def classify(function: str, **arrays) -> str:
    """HOST or DEVICE for a call's named array arguments; TypeError for anything else."""
    dtypes = {a.dtype if type(a) is np.ndarray else None for a in arrays.values()}
    if len(dtypes) == 1 and dtypes <= _NATIVE_HOST_DTYPES:
        return HOST
    for name, a in arrays.items():
        if isinstance(a, np.ma.MaskedArray):  # read as a plain array, its mask would be dropped silently
            raise TypeError(
                f"{function}: {name} is a numpy.ma.MaskedArray: masks are not supported; pass {name}.filled(value) "
                f"or {name}.data to say what the masked cells hold"
            )
    places = {name: placement(function, name, a) for name, a in arrays.items()}
    if len(set(places.values())) > 1:
        listed = ", ".join(f"{n} is a {_describe(arrays[n])} ({p})" for n, p in places.items())
        raise TypeError(
            f"{function}: {listed}: all array arguments of one call must be on the host (NumPy) or all on "
            f"a GPU; move them to one side first"
        )
    where = next(iter(places.values()))
    _check_dtypes(function, arrays, _HOST_DTYPES if where == HOST else _DEVICE_DTYPES, where)
    return where


def _check_dtypes(function: str, arrays: dict, allowed: tuple[str, ...], where: str) -> None:
    names = {n: dtype_name(a) for n, a in arrays.items()}
    dtype = next(iter(names.values()))
    if all(d == dtype for d in names.values()) and dtype in allowed:
        return
    listed = ", ".join(f"{n} has dtype {d}" for n, d in names.items())
    if len(set(names.values())) > 1:
        raise TypeError(f"{function}: {listed}: all array arguments of one call must share one dtype")
    if dtype not in allowed:
        hint = " (bfloat16 only for device arrays)" if where == HOST else ""
        raise TypeError(
            f"{function}: {listed}: {where} arrays must be {', '.join(allowed[:-1])} or {allowed[-1]}{hint}"
        )


def shape_of(a) -> tuple[int, ...]:
    if isinstance(a, np.ndarray):
        return a.shape  # already a tuple of Python ints
    shape = getattr(a, "shape", None)
    if shape is None:
        shape = a.__cuda_array_interface__["shape"]
    return tuple(int(s) for s in shape)


def run(where: str, op: str, arrays: tuple, geometry, alpha: float, stream=None):
    """Run a validated call on the backend that holds its arrays. ``stream`` only matters for
    device arrays (the CPU backend has none), so host calls ignore it."""
    if where == HOST:
        if not all(type(a) is np.ndarray for a in arrays):
            arrays = tuple(np.asarray(a) for a in arrays)
        return cpu.run(op, arrays, geometry, alpha)
    return _device_backend_call(op, arrays, geometry, alpha, stream)
