"""The CPU backend's compute dtypes: what each input dtype is computed in."""

from __future__ import annotations

import numpy as np


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 (as cuDNN does) and rounded once at the end."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(np.dtype(dtype).type)
