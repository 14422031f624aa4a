"""The convolutions' weights as their GEMMs read them: alpha * w' as (G, Og, Cg*K), w' being w
flipped on every spatial axis for mode 0 (convolution) and w itself for mode 1.

Normally that is one scaled copy of w, as big as w. Where that copy is past the call's memory
budget (_chunks: a few times the result, or 256 MiB; VGG's fc6 as a 7x7 convolution has 392 MiB
of float32 weights for a 16 KiB result), the products scale w a slab at a time instead: a slab of
filters for the forward product, of input channels for backward data's, each about SLAB_BYTES.
"""

from __future__ import annotations

import numpy as np

from . import _chunks

SLAB_BYTES = 16 << 20


def flipped(w: np.ndarray, d: int) -> np.ndarray:
    """w (filters, channels, *K) reversed along its d spatial axes: a view."""
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * d]


class Weights:
    def __init__(self, w: np.ndarray, cv, alpha: float, dtype: np.dtype, result_bytes: int):
        self.w, self.cv, self.alpha, self.dtype = w, cv, alpha, dtype
        fits = w.size * dtype.itemsize <= _chunks.budget(result_bytes)
        # The whole scaled copy, or None where the products scale slabs.
        self.whole = self._scaled(slice(None), slice(None)).reshape(cv.groups, cv.og, -1) if fits else None

    def _scaled(self, filters: slice, channels: slice) -> np.ndarray:
        """alpha * w'[filters, channels] as (filters, channels * K), in the compute dtype."""
        part = self.w[filters, channels]
        if self.cv.mode == 0:
            part = flipped(part, self.cv.d)
        return np.multiply(part, self.alpha, dtype=self.dtype).reshape(part.shape[0], -1)

    def _step(self, slab_row_values: int) -> int:
        return max(1, SLAB_BYTES // (slab_row_values * self.dtype.itemsize))

    def forward_product(self, col: np.ndarray, out: np.ndarray) -> None:
        """out (O, columns) = alpha * w' @ col (C*K, columns), group by group."""
        cv = self.cv
        grouped_col = col.reshape(cv.groups, cv.cg * cv.kp, -1)
        if self.whole is not None:
            np.matmul(self.whole, grouped_col, out=out.reshape(cv.groups, cv.og, -1))
            return
        step = self._step(cv.cg * cv.kp)
        for g in range(cv.groups):
            for o0 in range(g * cv.og, (g + 1) * cv.og, step):
                filters = slice(o0, min(o0 + step, (g + 1) * cv.og))
                np.matmul(self._scaled(filters, slice(None)), grouped_col[g], out=out[filters])

    def backward_data_product(self, dy: np.ndarray, dcol: np.ndarray) -> None:
        """dcol (C*K, columns) = (alpha * w')^T @ dy (O, columns), group by group."""
        cv = self.cv
        grouped_dy = dy.reshape(cv.groups, cv.og, -1)
        if self.whole is not None:
            np.matmul(self.whole.transpose(0, 2, 1), grouped_dy, out=dcol.reshape(cv.groups, cv.cg * cv.kp, -1))
            return
        step = self._step(cv.og * cv.kp)
        for g in range(cv.groups):
            filters = slice(g * cv.og, (g + 1) * cv.og)
            for c0 in range(0, cv.cg, step):
                c1 = min(c0 + step, cv.cg)
                rows = slice((g * cv.cg + c0) * cv.kp, (g * cv.cg + c1) * cv.kp)
                np.matmul(self._scaled(filters, slice(c0, c1)).T, grouped_dy[g], out=dcol[rows])
