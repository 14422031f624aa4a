"""The CPU backend's compute dtypes (what each input dtype is computed in), and which arrays the
compiled kernels that read whole arrays can take as they are."""

from __future__ import annotations

import numpy as np


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 (as cuDNN does) and rounded once at the end; any byte order."""
    kind = np.dtype(dtype).type
    return np.dtype(np.float32) if kind is np.float16 else np.dtype(kind)


def result_dtype(dtype: np.dtype) -> np.dtype:
    """Results have their inputs' dtype in native byte order: byte-swapped input (">f4" on this
    machine) is converted a block at a time as the kernels read it, never whole."""
    return np.dtype(dtype).newbyteorder("=")


def ready(a: np.ndarray, dtype: np.dtype) -> bool:
    """Whether kernels that read `a` whole (pooling, the direct convolution) can take it as it is:
    `dtype`, C-contiguous and aligned."""
    if a.dtype != dtype:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned
