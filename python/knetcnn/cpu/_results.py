"""Result arrays of the CPU backend over recycled memory (csrc/core/result_memory.hpp).

A fresh NumPy array of a few hundred KiB or more is fresh memory from the OS, which page-faults
on first write: a 3 MiB poolx result spent ~100 of its ~140 us there. float32 / float64 results
come from core.result_empty instead, whose blocks return, once the array and its views are gone,
to be handed out for the next result of that size. Other dtypes (float16) come from NumPy.
"""

from __future__ import annotations

import numpy as np

from .._core import core

_RECYCLED = (np.dtype(np.float64), np.dtype(np.float32))


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    return core.result_empty(shape, dtype) if dtype in _RECYCLED else np.empty(shape, dtype=dtype)


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    out = empty(shape, dtype)
    out.fill(0)
    return out
