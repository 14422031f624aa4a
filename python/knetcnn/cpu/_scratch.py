"""Per-call scratch buffers, reused from block to block.

A fresh large NumPy array is fresh memory from the OS, and its first write page-faults every
page: measured, a block loop that allocates its GEMM result anew runs 40% slower than one that
reuses a buffer. Blocks are near-equal in size (see _chunks.plan), so each buffer is allocated
once, by the first block.
"""

from __future__ import annotations

import math

import numpy as np


class Scratch:
    def __init__(self, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, purpose: str, shape: tuple[int, ...], *, zero: bool = False) -> np.ndarray:
        """A C-contiguous array of `shape` for `purpose` (one buffer per purpose), zeroed if asked."""
        size = math.prod(shape)
        buffer = self._buffers.get(purpose)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[purpose] = np.empty(size, dtype=self.dtype)
        out = buffer[:size].reshape(shape)
        if zero:
            out.fill(0)
        return out
