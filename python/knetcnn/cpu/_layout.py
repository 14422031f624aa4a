"""Array plumbing shared by the CPU kernels: compute dtypes, padded copies, strided windows.

Everything here reads its input through ordinary NumPy indexing, so any strides (transposed,
sliced, negative) are read correctly; nothing builds views from raw strides.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 (as cuDNN does) and rounded once at the end."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(np.dtype(dtype).type)


def offset_slices(offset: Sequence[int], step: Sequence[int], count: Sequence[int]) -> tuple:
    """Per spatial axis, positions offset, offset+step, ... (count of them), after (N, C)."""
    return (slice(None), slice(None)) + tuple(
        slice(o, o + s * (c - 1) + 1, s) for o, s, c in zip(offset, step, count)
    )


def padded(x: np.ndarray, pads: Sequence[int], fill: float, dtype: np.dtype) -> np.ndarray:
    """x with `pads` cells of `fill` before and after every spatial axis, as `dtype`.

    Returns x itself (no copy) when nothing is padded and the dtype already matches.
    """
    if not any(pads) and x.dtype == dtype:
        return x
    shape = x.shape[:2] + tuple(n + 2 * p for n, p in zip(x.shape[2:], pads))
    out = np.full(shape, fill, dtype=dtype)
    out[(slice(None), slice(None)) + tuple(slice(p, p + n) for p, n in zip(pads, x.shape[2:]))] = x
    return out


def interior(pads: Sequence[int], sizes: Sequence[int]) -> tuple:
    """Index of the unpadded part of a padded array."""
    return (slice(None), slice(None)) + tuple(slice(p, p + n) for p, n in zip(pads, sizes))


# NumPy runs a ufunc over rows that cannot be merged into one run (a block of a larger array)
# through its buffers whenever the rows are shorter than the buffer (8192 elements by default):
# measured here, `a += b` over float64 rows of 100-8000 elements then costs 0.8 ns per element
# instead of 0.25-0.5. With a buffer no longer than the rows, NumPy calls the loop on the rows in
# place. Rows under ~400 bytes gain nothing (per-row overhead dominates) or lose.
MIN_UNBUFFERED_ROW_BYTES = 384


@contextlib.contextmanager
def unbuffered_rows(length: int, itemsize: int) -> Iterator[None]:
    """Within the block, ufuncs over rows of `length` elements run unbuffered (see above)."""
    size = length // 16 * 16  # NumPy wants a multiple of 16
    old = np.getbufsize()
    if length * itemsize < MIN_UNBUFFERED_ROW_BYTES or size >= old:
        yield
        return
    np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)
