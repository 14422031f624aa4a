"""Convolution on the CPU: im2col gather, one BLAS product per group, col2im scatter-add.

All three directions are written in conv4's forward terms, read from the core's geometry `g`:
input (N, C, *X), filter (O, C // group, *K), output (N, O, *Y); for deconv4 the caller swaps
the roles (deconv4 is `backward_data`). Sizes always come from the geometry, never from formulas
here, so deconv4's output_padding (an input larger than conv4 would need) just works: rows that no
kernel position reaches stay zero.

The only Python loops run over blocks (see _chunks) and kernel offsets. For each block the
columns `col[c, k, n, *y] = xpad[n, c, y*s + k*dil]` are gathered with one strided copy per
kernel offset `k`, then `(G, Og, Cg*K) @ (G, Cg*K, n*Y)` runs as a single batched GEMM.
"""

from __future__ import annotations

import math

import numpy as np

from . import _chunks
from ._layout import compute_dtype, offset_slices, row_block


class _Conv:
    """The geometry's numbers, unpacked once."""

    def __init__(self, g):
        self.input_shape = tuple(g.input_shape)
        self.output_shape = tuple(g.output_shape)
        self.filter_shape = tuple(g.filter_shape)
        self.n, self.c = self.input_shape[:2]
        self.o = self.output_shape[1]
        self.x = self.input_shape[2:]
        self.y = self.output_shape[2:]
        self.k = self.filter_shape[2:]
        self.pads, self.stride, self.dilation = tuple(g.padding), tuple(g.stride), tuple(g.dilation)
        self.mode, self.groups = g.mode, g.group
        self.cg, self.og = self.c // self.groups, self.o // self.groups
        self.kp = math.prod(self.k)
        # Kernel offsets in row-major order: the order of w's flattened spatial axes.
        self.offsets = [tuple(j * d for j, d in zip(idx, self.dilation)) for idx in np.ndindex(*self.k)]

    def input_rows(self, block: _chunks.Block) -> tuple[int, int]:
        """Padded input rows [a, b) that output rows [r0, r1) read."""
        a = block.r0 * self.stride[0]
        b = (block.r1 - 1) * self.stride[0] + (self.k[0] - 1) * self.dilation[0] + 1
        return a, b

    def blocks(self, result_bytes: int, itemsize: int):
        positions = math.prod(self.y[1:])
        padded_row = math.prod(n + 2 * p for n, p in zip(self.x[1:], self.pads[1:]))
        # Per output row of one item: its columns, its GEMM result / dy copy, its padded input.
        per_row = itemsize * (positions * (self.c * self.kp + 2 * self.o) + self.c * self.stride[0] * padded_row)
        return _chunks.plan(self.n, self.y[0], per_row, result_bytes)


def _weights(w: np.ndarray, cv: _Conv, alpha: float, dtype: np.dtype) -> np.ndarray:
    """alpha * w' as (G, Og, Cg*K): w' is w flipped on every spatial axis for mode 0 (convolution)."""
    if cv.mode == 0:
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(cv.k)]
    wm = np.multiply(w, alpha, dtype=dtype)
    return wm.reshape(cv.groups, cv.og, cv.cg * cv.kp)


def _gather(cv: _Conv, xb: np.ndarray, rows: int, buffer: np.ndarray) -> np.ndarray:
    """Columns of one block as (G, Cg*K, n*positions); xb is the block's padded input."""
    items = xb.shape[0]
    counts = (rows,) + cv.y[1:]
    col = buffer[: cv.c * cv.kp * items * math.prod(counts)].reshape((cv.c, cv.kp, items) + counts)
    for k, offset in enumerate(cv.offsets):
        col[:, k] = xb[offset_slices(offset, cv.stride, counts)].swapaxes(0, 1)
    return col.reshape(cv.groups, cv.cg * cv.kp, -1)


def _grouped(dy: np.ndarray, cv: _Conv, block: _chunks.Block, dtype: np.dtype) -> np.ndarray:
    """dy of one block as (G, Og, n*positions), a contiguous copy in the compute dtype."""
    part = dy[block.n0 : block.n1, :, block.r0 : block.r1].swapaxes(0, 1)
    return np.ascontiguousarray(part, dtype=dtype).reshape(cv.groups, cv.og, -1)


def _column_buffer(cv: _Conv, blocks: list[_chunks.Block], dtype: np.dtype) -> np.ndarray:
    largest = max((b.n1 - b.n0) * (b.r1 - b.r0) for b in blocks)
    return np.empty(cv.c * cv.kp * largest * math.prod(cv.y[1:]), dtype=dtype)


def forward(w: np.ndarray, x: np.ndarray, g, alpha: float) -> np.ndarray:
    """y = alpha * conv(w', x): conv4(w, x), and deconv4x(w, ., dy) with x = dy."""
    cv = _Conv(g)
    dtype = compute_dtype(x.dtype)
    wm = _weights(w, cv, alpha, dtype)
    y = np.empty(cv.output_shape, dtype=x.dtype)
    blocks = list(cv.blocks(y.nbytes, dtype.itemsize))
    buffer = _column_buffer(cv, blocks, dtype)
    for b in blocks:
        xb = row_block(x, slice(b.n0, b.n1), cv.input_rows(b), cv.pads, dtype)
        out = np.matmul(wm, _gather(cv, xb, b.r1 - b.r0, buffer))
        y[b.n0 : b.n1, :, b.r0 : b.r1] = out.reshape((cv.o, b.n1 - b.n0, b.r1 - b.r0) + cv.y[1:]).swapaxes(0, 1)
    return y


def backward_data(w: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """dx = alpha * conv(w', .)^T dy: conv4x(w, x, dy), and deconv4(w, x) with dy = x."""
    cv = _Conv(g)
    dtype = compute_dtype(dy.dtype)
    wt = _weights(w, cv, alpha, dtype).transpose(0, 2, 1)
    dx = np.zeros(cv.input_shape, dtype=dtype)
    direct = not any(cv.pads)  # scatter straight into dx: no padded rows to drop
    for b in cv.blocks(dx.nbytes, dtype.itemsize):
        items, rows = b.n1 - b.n0, b.r1 - b.r0
        dcol = np.matmul(wt, _grouped(dy, cv, b, dtype)).reshape((cv.c, cv.kp, items, rows) + cv.y[1:])
        a, e = cv.input_rows(b)
        if direct:
            target = dx[b.n0 : b.n1, :, a:e]
        else:
            padded_rest = tuple(n + 2 * p for n, p in zip(cv.x[1:], cv.pads[1:]))
            target = np.zeros((items, cv.c, e - a) + padded_rest, dtype=dtype)
        counts = (rows,) + cv.y[1:]
        for k, offset in enumerate(cv.offsets):
            # For a fixed offset distinct outputs hit distinct cells, so += on the view is exact.
            target[offset_slices(offset, cv.stride, counts)] += dcol[:, k].swapaxes(0, 1)
        if not direct:
            _add_unpadded(dx, target, b, (a, e), cv)
    return dx.astype(dy.dtype, copy=False)


def _add_unpadded(dx: np.ndarray, target: np.ndarray, b: _chunks.Block, rows: tuple[int, int], cv: _Conv) -> None:
    """dx[block] += the part of a padded block that lies inside x (blocks may share rows)."""
    a, e = rows
    lo, hi = max(a - cv.pads[0], 0), min(e - cv.pads[0], cv.x[0])
    if hi <= lo:
        return
    src = (slice(None), slice(None), slice(lo - (a - cv.pads[0]), hi - (a - cv.pads[0])))
    src += tuple(slice(p, p + n) for p, n in zip(cv.pads[1:], cv.x[1:]))
    dx[b.n0 : b.n1, :, lo:hi] += target[src]


def backward_filter(x: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """dw = alpha * sum_n dy (x) columns, in w's stored orientation: conv4w, and deconv4w (x = dy)."""
    cv = _Conv(g)
    dtype = compute_dtype(x.dtype)
    dwm = np.zeros((cv.groups, cv.og, cv.cg * cv.kp), dtype=dtype)
    blocks = list(cv.blocks(dwm.nbytes, dtype.itemsize))
    buffer = _column_buffer(cv, blocks, dtype)
    for b in blocks:
        xb = row_block(x, slice(b.n0, b.n1), cv.input_rows(b), cv.pads, dtype)
        col = _gather(cv, xb, b.r1 - b.r0, buffer)
        dwm += np.matmul(_grouped(dy, cv, b, dtype), col.transpose(0, 2, 1))
    dw = dwm.reshape(cv.filter_shape)
    if cv.mode == 0:
        dw = dw[(slice(None), slice(None)) + (slice(None, None, -1),) * len(cv.k)]
    return np.multiply(dw, alpha, dtype=dtype).astype(x.dtype, copy=False)
