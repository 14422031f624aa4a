"""Pooling on the CPU: max and average pooling, their gradients, and Knet's unpool.

Every kernel loops over window offsets only; each step works on one strided view covering every
(batch, channel, output position) at once. Sizes come from the core's geometry `g`, in pool's
forward terms: input (N, C, *X) -> output (N, C, *Y). For unpool the geometry is transposed
(input is unpool's result, output is its x), so unpool is an average-pool backward and unpoolx an
average-pool forward on the same geometry.

Max pooling (modes 0 and 3 compute the same thing here):
- padding never counts: it is filled with -inf (maxpoolingNanOpt=1) or NaN (=0, skipped by fmax);
  every window holds at least one in-bounds cell because the core requires padding < window.
- maxpoolingNanOpt=1: a window containing NaN gives NaN. =0: NaNs are skipped, and a window of
  only NaNs gives -finfo(dtype).max.
- the gradient of a window goes to exactly one cell: the first in-bounds cell in row-major order
  whose value is the window's maximum, recomputed from x (y is not trusted: it includes alpha).
  A NaN window (maxpoolingNanOpt=1) routes to its first NaN cell; an all-NaN window with
  maxpoolingNanOpt=0 routes nowhere, since its output (-finfo.max) does not depend on x.
"""

from __future__ import annotations

import math

import numpy as np

from . import _chunks
from ._layout import compute_dtype, interior, offset_slices, padded


class _Pool:
    """The geometry's numbers, unpacked once (pool's forward terms)."""

    def __init__(self, g, mode: int | None = None):
        self.input_shape = tuple(g.input_shape)
        self.output_shape = tuple(g.output_shape)
        self.x = self.input_shape[2:]
        self.y = self.output_shape[2:]
        self.window, self.pads, self.stride = tuple(g.window), tuple(g.padding), tuple(g.stride)
        self.mode = g.cudnn_mode if mode is None else mode
        self.nan_opt = g.nan_opt
        self.offsets = list(np.ndindex(*self.window))  # row-major: the tie-break order

    def cells(self, offset) -> tuple:
        """Index, into the padded input, of cell `offset` of every window."""
        return offset_slices(offset, self.stride, self.y)


def _in_bounds_counts(p: _Pool) -> np.ndarray:
    """Number of in-bounds cells of every window, shaped to broadcast against the output."""
    count = np.ones((1, 1) + (1,) * len(p.y))
    for axis, (n, win, pad, s, size) in enumerate(zip(p.y, p.window, p.pads, p.stride, p.x)):
        start = np.arange(n) * s - pad
        per_axis = np.minimum(start + win, size) - np.maximum(start, 0)
        shape = [1] * count.ndim
        shape[2 + axis] = n
        count = count * per_axis.reshape(shape)
    return count


def _divisor(p: _Pool):
    """Average divisor: prod(window) (mode 1, padding counted) or the in-bounds count (mode 2)."""
    return math.prod(p.window) if p.mode == 1 else _in_bounds_counts(p)


def _window_max(p: _Pool, xp: np.ndarray) -> np.ndarray:
    """Max of every window of padded xp; NaN per the NaN option (all-NaN windows stay NaN here)."""
    combine = np.maximum if p.nan_opt == 1 else np.fmax
    acc = np.array(xp[p.cells(p.offsets[0])], copy=True)
    for offset in p.offsets[1:]:
        combine(acc, xp[p.cells(offset)], out=acc)
    return acc


def _max_fill(p: _Pool) -> float:
    return -np.inf if p.nan_opt == 1 else np.nan


def _average_sum(p: _Pool, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    xp = padded(x, p.pads, 0.0, dtype)
    acc = np.array(xp[p.cells(p.offsets[0])], dtype=dtype, copy=True)
    for offset in p.offsets[1:]:
        acc += xp[p.cells(offset)]
    return acc


def _blockwise(p: _Pool, result_shape, out_dtype, dtype: np.dtype, compute, *arrays) -> np.ndarray:
    """result[items, chans] = compute(*(a[items, chans] for a in arrays)), block by block.

    Channels are independent; cache-sized blocks of (batch, channel) keep each block's scratch
    small (bounded memory) and in cache between the passes over it (measured: 2x faster max-pool
    backward on VGG-sized float64 input).
    """
    result = np.empty(result_shape, dtype=out_dtype)
    padded_cells = math.prod(n + 2 * q for n, q in zip(p.x, p.pads))
    per_channel = dtype.itemsize * max(padded_cells, math.prod(p.y))
    for items, chans in _chunks.channel_blocks(result_shape[0], result_shape[1], per_channel):
        result[items, chans] = compute(*(a[items, chans] for a in arrays))
    return result


def forward(x: np.ndarray, g, alpha: float, *, mode: int | None = None, scale: float | None = None) -> np.ndarray:
    """y = alpha * pool(x). `mode` overrides the geometry's (unpoolx pools with the mapped mode)."""
    p = _Pool(g, mode)
    dtype = compute_dtype(x.dtype)
    factor = alpha if scale is None else scale

    def block(x):
        if p.mode in (0, 3):
            acc = _window_max(p, padded(x, p.pads, _max_fill(p), dtype))
            if p.nan_opt == 0:
                acc[np.isnan(acc)] = -np.finfo(x.dtype).max
        else:
            acc = _average_sum(p, x, dtype)
            acc /= _divisor(p)
        acc *= factor
        return acc

    return _blockwise(p, x.shape[:2] + p.y, x.dtype, dtype, block, x)


def _average_backward(p: _Pool, dy: np.ndarray, scale: float, dtype: np.dtype, out_dtype) -> np.ndarray:
    """Every in-bounds cell of a window receives scale * dy / divisor."""

    def block(dy):
        share = np.multiply(dy, scale, dtype=dtype)
        share /= _divisor(p)
        dxp = np.zeros(dy.shape[:2] + tuple(n + 2 * q for n, q in zip(p.x, p.pads)), dtype=dtype)
        for offset in p.offsets:
            # For a fixed offset distinct windows own distinct cells, so += on the view is exact.
            dxp[p.cells(offset)] += share
        return dxp[interior(p.pads, p.x)]

    return _blockwise(p, dy.shape[:2] + p.x, out_dtype, dtype, block, dy)


def _max_backward(p: _Pool, x: np.ndarray, dy: np.ndarray, alpha: float, dtype: np.dtype) -> np.ndarray:
    block = lambda x, dy: _max_backward_block(p, x, dy, alpha, dtype)  # noqa: E731
    return _blockwise(p, x.shape, x.dtype, dtype, block, x, dy)


def _max_backward_block(p: _Pool, x: np.ndarray, dy: np.ndarray, alpha: float, dtype: np.dtype) -> np.ndarray:
    xp = padded(x, p.pads, _max_fill(p), dtype)
    best = _window_max(p, xp)
    share = np.multiply(dy, alpha, dtype=dtype)
    if p.nan_opt == 1 and (np.isnan(best).any() or (any(p.pads) and np.isneginf(best).any())):
        # Rare windows: NaN ones route to their first NaN; all -inf ones must not pick padding.
        return _max_backward_careful(p, x, xp, best, share)
    # Offsets in row-major order: each routes the windows whose max it holds and that no
    # earlier offset routed (`done`). Padding is -inf or NaN here, so it never holds a max.
    tiled = p.stride == p.window and not any(p.pads)  # windows own disjoint cells: assign, no add
    dxp = np.zeros(xp.shape, dtype=dtype)
    hit = np.empty(best.shape, dtype=bool)
    done = np.zeros(best.shape, dtype=bool)
    routed = None if tiled else np.empty(best.shape, dtype=dtype)
    for k, offset in enumerate(p.offsets):
        np.equal(xp[p.cells(offset)], best, out=hit)
        np.greater(hit, done, out=hit)  # hit and not done
        if k + 1 < len(p.offsets):
            np.logical_or(done, hit, out=done)
        target = dxp[p.cells(offset)]
        if tiled:
            np.multiply(hit, share, out=target)
        else:
            np.multiply(hit, share, out=routed)
            target += routed  # for a fixed offset distinct windows own distinct cells
    return dxp[interior(p.pads, p.x)]


def _max_backward_careful(p: _Pool, x: np.ndarray, xp: np.ndarray, best: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Max-pool gradient that also handles NaN windows and all -inf windows next to padding."""
    nan_windows = np.isnan(best)
    inside = padded(np.ones(x.shape, dtype=bool), p.pads, False, np.dtype(bool)) if any(p.pads) else None
    dxp = np.zeros(xp.shape, dtype=share.dtype)
    routed = np.zeros(best.shape, dtype=bool)
    for offset in p.offsets:
        cell = xp[p.cells(offset)]
        hit = (cell == best) | (np.isnan(cell) & nan_windows)
        if inside is not None:
            hit &= inside[p.cells(offset)]
        hit &= ~routed
        routed |= hit
        target = dxp[p.cells(offset)]
        np.add(target, share, out=target, where=hit)
    return dxp[interior(p.pads, p.x)]


def backward(x: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """poolx: dL/dx for L = <dy, pool(x)>."""
    p = _Pool(g)
    dtype = compute_dtype(x.dtype)
    if p.mode in (0, 3):
        return _max_backward(p, x, dy, alpha, dtype)
    return _average_backward(p, dy, alpha, dtype, x.dtype)


def unpool(x: np.ndarray, g, alpha: float) -> np.ndarray:
    """Knet's unpool: the average-pool backward (mapped mode) of x * prod(window), over alpha."""
    p = _Pool(g)  # transposed geometry: p.y is x's spatial shape, p.x the result's
    return _average_backward(p, x, math.prod(p.window) / alpha, compute_dtype(x.dtype), x.dtype)


def unpoolx(dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """unpool's gradient: prod(window) * pool(dy, mode=mapped, alpha=1/alpha)."""
    return forward(dy, g, 1.0, scale=math.prod(g.window) / alpha)
