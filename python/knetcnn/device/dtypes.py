"""The element types device arrays may have, and their names in each protocol.

Internally a dtype is its name: ``"float16"``, ``"float32"``, ``"float64"`` or ``"bfloat16"``
(the types cuDNN computes in for this library). NumPy has no bfloat16; the ``ml_dtypes`` package
provides one, so a host array or a :class:`KnetArray` of bfloat16 needs it. Device arrays of
bfloat16 arriving through DLPack (PyTorch, JAX) are parsed without it.
"""

from __future__ import annotations

import sys

import numpy as np

SUPPORTED = ("float16", "float32", "float64", "bfloat16")
ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8, "bfloat16": 2}

# DLPack DLDataTypeCode values (dlpack.h) for the types above: (code, bits) -> name.
DL_FLOAT = 2
DL_BFLOAT = 4
DLPACK_CODES = {(DL_FLOAT, 16): "float16", (DL_FLOAT, 32): "float32", (DL_FLOAT, 64): "float64",
                (DL_BFLOAT, 16): "bfloat16"}
DLPACK_OF = {name: code for code, name in DLPACK_CODES.items()}
_DLPACK_CODE_NAMES = {0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex",
                      6: "bool"}

_SUPPORTED_TEXT = "float16, float32, float64 or bfloat16"


def _ml_dtypes():
    """The ml_dtypes module, or None; imported only when bfloat16 is asked for."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


def bfloat16_numpy_dtype(function: str) -> np.dtype:
    """NumPy's dtype for bfloat16 (from ml_dtypes); TypeError saying how to get it otherwise."""
    ml = _ml_dtypes()
    if ml is None:
        raise TypeError(
            f"{function}: dtype bfloat16 needs the ml_dtypes package for host (NumPy) arrays: "
            "pip install ml_dtypes (bfloat16 device arrays from PyTorch or JAX work without it)"
        )
    return np.dtype(ml.bfloat16)


def numpy_dtype(name: str, function: str) -> np.dtype:
    """The NumPy dtype of a supported dtype name."""
    if name == "bfloat16":
        return bfloat16_numpy_dtype(function)
    return np.dtype(name)


def dtype_name(dtype, function: str, argument: str = "dtype") -> str:
    """The name of a supported dtype given as a string, NumPy dtype or type, or a torch dtype.

    Anything else, or an unsupported type (int32, complex64, ...), is a TypeError naming it.
    """
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
    elif type(dtype).__module__.split(".")[0] == "torch":  # torch.float32 and friends
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise TypeError(
                f"{function}: {argument}={dtype!r}: {argument} must be one of {_SUPPORTED_TEXT}, "
                f"not a {type(dtype).__name__}"
            ) from None
    if name not in SUPPORTED:
        raise TypeError(f"{function}: {argument}={dtype!r}: {argument} must be one of {_SUPPORTED_TEXT}")
    return name


def refuse_dtype(function: str, argument: str, described: str) -> TypeError:
    """The TypeError for an array whose element type knetcnn does not compute in."""
    return TypeError(
        f"{function}: {argument} has element type {described}; knetcnn computes in {_SUPPORTED_TEXT}: "
        "convert the array first (for example x.astype('float32'))"
    )


def dlpack_type_text(code: int, bits: int, lanes: int) -> str:
    base = _DLPACK_CODE_NAMES.get(code, f"type code {code}")
    text = f"{base}{bits}"
    return text if lanes == 1 else f"{text}x{lanes} (vector of {lanes} lanes)"


def native_byteorder_char() -> str:
    return "<" if sys.byteorder == "little" else ">"
