"""Scratch buffers for the convolution's blocks, reused from block to block and call to call.

A fresh large NumPy array is fresh memory from the OS, and its first write page-faults every
page: measured on the benchmark machine, a LeNet conv4 spends 5-9 of its 7-11 ms doing that
when its buffers are new on every call, and 1.4 ms in all when they are reused. So each thread
keeps its buffers (one per purpose and dtype) between calls, up to RETAIN_BYTES in all; larger
ones are dropped when the call ends. Results never live in scratch.
"""

from __future__ import annotations

import math
import threading

import numpy as np

RETAIN_BYTES = 64 << 20  # per thread, kept between calls

_local = threading.local()


class Scratch:
    """Use as `with Scratch(dtype) as scratch:` around one call's blocks."""

    def __init__(self, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        if not hasattr(_local, "buffers"):
            _local.buffers = {}
        self._buffers: dict[tuple[str, str], np.ndarray] = _local.buffers

    def array(self, purpose: str, shape: tuple[int, ...], *, zero: bool = False) -> np.ndarray:
        """A C-contiguous array of `shape` for `purpose` (one buffer per purpose), zeroed if asked."""
        size = math.prod(shape)
        key = (self.dtype.str, purpose)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            self._buffers.pop(key, None)  # free the old one before the bigger one is made
            buffer = self._buffers[key] = np.empty(size, dtype=self.dtype)
        out = buffer[:size].reshape(shape)
        if zero:
            out.fill(0)
        return out

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        """Keep at most RETAIN_BYTES of buffers for the next call: drop the largest first."""
        total = sum(b.nbytes for b in self._buffers.values())
        for key, buffer in sorted(self._buffers.items(), key=lambda kv: -kv[1].nbytes):
            if total <= RETAIN_BYTES:
                break
            del self._buffers[key]
            total -= buffer.nbytes
