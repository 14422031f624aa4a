"""Pooling on the CPU: max and average pooling, their gradients, and Knet's unpool.

Every kernel loops over window offsets only; each step works on one strided view covering every
(batch, channel, output position) of a cache-sized block at once. Windows that tile the input
(stride == window, no padding: the usual 2x2 pooling) have faster paths, since a NumPy op on a
strided view pays per row of the output grid: 2-D max pooling reduces whole rows, then 1-D
strided columns; the max-pool gradient copies each window offset's cells into contiguous rows
first (blocks with NaN or non-finite gradients take the general path). Sizes come from the core's geometry `g`, in pool's
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
from ._layout import compute_dtype, interior, offset_slices, padded, unbuffered_rows
from ._scratch import Scratch


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
        # Windows that tile the input: every cell in at most one window, no padding.
        self.tiled = self.stride == self.window and not any(self.pads)

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

    if p.tiled and len(p.y) == 2 and p.mode in (0, 3) and TILED_FORWARD:
        return _tiled_max_forward(p, x, dtype, factor)
    return _blockwise(p, x.shape[:2] + p.y, x.dtype, dtype, block, x)


TILED_FORWARD = True  # switch for A/B timing against the general path


def _tiled_max_forward(p: _Pool, x: np.ndarray, dtype: np.dtype, factor: float) -> np.ndarray:
    """2-D max pool of windows that tile x: rows first, then columns, over whole blocks.

    The row maxima combine whole rows of x (long runs, one call per window row); their rows,
    stored back to back, make one contiguous run in which the windows' columns are steps of
    the window width, so the column maxima are one 1-D strided call each. Max is exact, so the
    order of the comparisons changes nothing.
    """
    (kh, kw), (yh, yw) = p.window, p.y
    combine = np.maximum if p.nan_opt == 1 else np.fmax
    y = np.empty(x.shape[:2] + p.y, dtype=x.dtype)
    with Scratch(dtype) as scratch:
        for items, chans in _tiled_blocks(p, x.shape, dtype):
            crop = x[items, chans][..., : yh * kh, : yw * kw]
            rows = scratch.array("pool rows", crop.shape[:2] + (yh, yw * kw))
            with unbuffered_rows(yw * kw, x.itemsize):
                if kh == 1:
                    np.copyto(rows, crop)
                else:
                    combine(crop[..., 0::kh, :], crop[..., 1::kh, :], out=rows)
                for i in range(2, kh):
                    combine(rows, crop[..., i::kh, :], out=rows)
            flat = rows.reshape(-1)
            acc = scratch.array("pool acc", (flat.size // kw,))
            if kw == 1:
                np.copyto(acc, flat)
            else:
                combine(flat[0::kw], flat[1::kw], out=acc)
            for j in range(2, kw):
                combine(acc, flat[j::kw], out=acc)
            if p.nan_opt == 0:
                acc[np.isnan(acc)] = -np.finfo(x.dtype).max
            out = y[items, chans]
            np.multiply(acc.reshape(out.shape), factor, out=out, casting="unsafe")
    return y


def _tiled_blocks(p: _Pool, shape, dtype: np.dtype):
    """(batch, channel) blocks for the tiled kernels, TILED_BLOCK_BYTES of input each."""
    return _chunks.channel_blocks(shape[0], shape[1], dtype.itemsize * math.prod(p.x), TILED_BLOCK_BYTES)


def _gather_cells(p: _Pool, x: np.ndarray, scratch) -> np.ndarray:
    """(K, windows) contiguous scratch: row k holds cell k (row-major) of every window of x."""
    cells = scratch.array("pool cells", (len(p.offsets), x.shape[0], x.shape[1]) + p.y)
    for k, offset in enumerate(p.offsets):
        cells[k] = x[p.cells(offset)]
    return cells.reshape(len(p.offsets), -1)


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
    if not p.tiled:
        block = lambda x, dy: _max_backward_block(p, x, dy, alpha, dtype)  # noqa: E731
        return _blockwise(p, x.shape, x.dtype, dtype, block, x, dy)
    dx = np.empty(x.shape, dtype=x.dtype)
    with Scratch(dtype) as scratch:
        for items, chans in _tiled_blocks(p, x.shape, dtype):
            xb, dyb, out = x[items, chans], dy[items, chans], dx[items, chans]
            if not _max_backward_tiled(p, xb, dyb, alpha, out, scratch):
                out[...] = _max_backward_block(p, xb, dyb, alpha, dtype)
    return dx


# Blocks of the tiled max-pool gradient: larger than the general path's, since each of its steps
# is one NumPy call over a whole block (measured: 4 MiB runs VGG-sized float64 input 10% faster
# than 1 MiB, 30% faster than 256 KiB).
TILED_BLOCK_BYTES = 4 << 20


def _max_backward_tiled(p: _Pool, x: np.ndarray, dy: np.ndarray, alpha: float, out: np.ndarray, scratch) -> bool:
    """Max-pool gradient of windows that tile x (stride == window, no padding) into `out`.

    Each window offset's cells are copied into one contiguous row of (K, windows) scratch, so
    every later step is a single NumPy call over contiguous memory (an op on a strided view pays
    ~20 ns per row of the output grid; a copy, less than half that). The rows are then routed in
    row-major order: row k takes the share of the windows whose maximum it holds and that no
    earlier row took (`s * hit`, then `s -= that`), and the gradient rows are copied back.
    Returns False, having written nothing, for blocks with NaN in x or a non-finite share (the
    exact `s * hit` routing needs finite shares): the general path handles those.
    """
    count = len(p.offsets)
    windows = math.prod(dy.shape)
    rows = _gather_cells(p, x, scratch)
    best = scratch.array("pool best", (windows,))
    share = scratch.array("pool share", dy.shape)
    hit = scratch.bool_array("pool hit", (windows,))
    np.multiply(dy, alpha, out=share, dtype=share.dtype)
    share = share.reshape(windows)
    if count == 1:
        np.copyto(best, rows[0])
    else:
        np.maximum(rows[0], rows[1], out=best)
    for k in range(2, count):
        np.maximum(best, rows[k], out=best)
    # Sums of squares (one BLAS call each): NaN iff a NaN is present; not finite also for
    # infinite shares (the routing would compute inf - inf), or for merely huge ones.
    if np.isnan(np.dot(best, best)) or not np.isfinite(np.dot(share, share)):
        return False
    for k in range(count - 1):
        np.equal(rows[k], best, out=hit)
        np.multiply(share, hit, out=rows[k])
        np.subtract(share, rows[k], out=share if k + 2 < count else rows[count - 1])
    if count == 1:
        np.copyto(rows[0], share)
    cols = rows.reshape((count,) + dy.shape)
    for k, offset in enumerate(p.offsets):
        out[p.cells(offset)] = cols[k]
    for axis, (n, k) in enumerate(zip(p.y, p.window)):  # cells past the last whole window
        out[(slice(None),) * (2 + axis) + (slice(n * k, None),)] = 0
    return True


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
    # hit * share puts inf * 0 = NaN into the cells an infinite share does not go to.
    finite = np.isfinite(np.dot(share.ravel(), share.ravel()))
    for k, offset in enumerate(p.offsets):
        np.equal(xp[p.cells(offset)], best, out=hit)
        np.greater(hit, done, out=hit)  # hit and not done
        if k + 1 < len(p.offsets):
            np.logical_or(done, hit, out=done)
        target = dxp[p.cells(offset)]
        out = target if tiled else routed
        if finite:
            np.multiply(hit, share, out=out)
        else:
            np.copyto(out, np.where(hit, share, 0))
        if not tiled:
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
