"""The CPU backend's compute dtypes (what each input dtype is computed in), and which arrays the
compiled kernels that read whole arrays can take as they are."""

from __future__ import annotations

import numpy as np


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 (as cuDNN does) and rounded once at the end."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(np.dtype(dtype).type)


def ready(a: np.ndarray, dtype: np.dtype) -> bool:
    """Whether kernels that read `a` whole (pooling, the direct convolution) can take it as it is:
    `dtype`, C-contiguous and aligned."""
    if a.dtype != dtype:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned
