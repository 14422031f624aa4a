"""Pooling on the CPU: max and average pooling, their gradients, and Knet's unpool.

The work is done by compiled kernels (csrc/core/cpu_pool.cpp: one pass over each (batch,
channel) plane, planes spread over threads); this file maps Knet's ops onto them and feeds
them aligned, C-contiguous arrays of the compute dtype. float32 and float64 arrays that already
are go in one call, without a copy; anything else (float16, computed in float32, strided,
misaligned or byte-swapped input) is converted in blocks of whole planes, or in bands of a
plane's rows when one plane is bigger than a block, so scratch stays bounded. Results are the
same bit for bit however the work is cut.

Sizes come from the core's geometry `g`, in pool's forward terms: input (N, C, *X) -> output
(N, C, *Y). For unpool the geometry is transposed (input is unpool's result, output is its x),
so unpool is an average-pool backward and unpoolx an average-pool forward on the same geometry.

Max pooling (modes 0 and 3 compute the same thing here):
- padding never counts; every window holds at least one in-bounds cell because the core
  requires padding < window.
- maxpoolingNanOpt=1: a window containing NaN gives NaN. =0: NaNs are skipped, and a window of
  only NaNs gives -finfo(dtype).max.
- the gradient of a window goes to exactly one cell: the first in-bounds cell in row-major order
  whose value is the window's maximum, recomputed from x (y is not trusted: it includes alpha).
  A NaN window (maxpoolingNanOpt=1) routes to its first NaN cell; an all-NaN window with
  maxpoolingNanOpt=0 routes nowhere, since its output (-finfo.max) does not depend on x.
Average pooling divides by prod(window) (mode 1) or by the window's in-bounds cells (mode 2).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .._core import core
from . import _chunks
from ._layout import compute_dtype, ready


class Kernel(NamedTuple):
    """One pooling op as a compiled kernel: ``call(*inputs)`` on whole C-contiguous, aligned arrays
    of the compute dtype, ``inputs`` the positions of the op's arrays it reads, and the spatial
    shape of its result. ``forward`` kernels (pool, unpoolx) read arrays of g.input's shape and
    give g.output's; the others (poolx, unpool) read dy of g.output's shape last (after x, for max
    pooling) and give g.input's."""

    call: Callable
    inputs: tuple[int, ...]
    result_spatial: tuple[int, ...]
    forward: bool


def kernel(op: str, g, alpha: float, dtype: np.dtype) -> Kernel:
    """The kernel that computes `op` (pool, poolx, unpool, unpoolx) for arrays of `dtype`."""
    all_nan = -float(np.finfo(dtype).max)
    mode = g.cudnn_mode
    x_shape, y_shape = g.input_shape[2:], g.output_shape[2:]
    if op == "pool":  # y = alpha * pool(x)
        return Kernel(lambda x: core.cpu_pool_forward(g, x, mode, alpha, all_nan), (0,), y_shape, True)
    if op == "poolx" and mode in (0, 3):  # each window's alpha * dy to its first maximum, recomputed from x
        return Kernel(lambda x, dy: core.cpu_max_pool_backward(g, x, dy, alpha), (0, 2), x_shape, False)
    if op == "poolx":  # every in-bounds cell of a window gets alpha * dy / divisor
        return Kernel(lambda dy: core.cpu_average_pool_backward(g, dy, mode, alpha), (2,), x_shape, False)
    scale = math.prod(g.window) / alpha
    if op == "unpool":  # the average-pool backward (mapped mode) of x * prod(window), over alpha
        return Kernel(lambda x: core.cpu_average_pool_backward(g, x, mode, scale), (0,), x_shape, False)
    if op == "unpoolx":  # prod(window) * pool(dy, mode=mapped, alpha=1/alpha)
        return Kernel(lambda dy: core.cpu_pool_forward(g, dy, mode, scale, all_nan), (2,), y_shape, True)
    raise ValueError(f"pool.kernel: {op!r} is not a pooling op")


def run(op: str, arrays: tuple[np.ndarray, ...], g, alpha: float) -> np.ndarray:
    """op's result in the dtype of its arrays (native byte order), any layout or float dtype."""
    dtype = arrays[0].dtype.newbyteorder("=")
    k = kernel(op, g, alpha, dtype)
    inputs = tuple(arrays[i] for i in k.inputs)
    compute = compute_dtype(dtype)
    if all(ready(a, compute) for a in inputs):
        return k.call(*inputs)
    return _converted(op, inputs, g, alpha, dtype, k)


def _converted(op, inputs, g, alpha, dtype, k: Kernel) -> np.ndarray:
    """run's result for input the kernels cannot read in place, converted a block at a time:
    blocks of whole (batch, channel) planes, or bands of one plane's rows when a plane alone is
    bigger than the block target (a 16384 x 16384 float16 plane is 1 GiB of float32)."""
    compute = compute_dtype(dtype)
    n, c = inputs[0].shape[:2]
    result = np.empty((n, c) + tuple(k.result_spatial), dtype=dtype)
    per_plane = compute.itemsize * max(math.prod(a.shape[2:]) for a in inputs + (result,))
    target = _chunks.POOL_BLOCK_BYTES
    for items, chans in _chunks.channel_blocks(n, c, per_plane, target):
        block = tuple(a[items, chans] for a in inputs)
        if per_plane <= target:
            result[items, chans] = k.call(*(np.require(a, compute, ["C", "A"]) for a in block))
        else:
            _banded(op, block, g, alpha, dtype, k.forward, result[items, chans])
    return result


class _Axis(NamedTuple):
    """The first spatial axis, which bands cut, in pool's forward terms: `size` input rows, `out`
    output rows, each output row r pooling input rows [r * stride - pad, r * stride - pad + window)."""

    size: int
    out: int
    window: int
    stride: int
    pad: int


class _Band(NamedTuple):
    """Input rows [lo, hi) of the first spatial axis, enough for output rows [r0, r1); the band's
    result rows [a, b) (output rows for forward ops, input rows for backward ones) are exact."""

    lo: int
    hi: int
    r0: int
    r1: int
    a: int
    b: int


def _banded(op, block, g, alpha, dtype, forward: bool, result: np.ndarray) -> None:
    """result = op on `block` (arrays of whole planes), computed in bands of rows along the first
    spatial axis. Each band is the same pooling on fewer input rows, with the same padding: its
    windows for rows [r0, r1) see exactly the cells they see in the whole plane (the band's own
    padding is never reached by them), so the band's rows [a, b) match the whole plane's bit for
    bit. Backward ops sum several windows into a cell; dy rows outside [r0, r1) are zero in the
    band, and rows [a, b) take every window that touches them."""
    compute = compute_dtype(dtype)
    ax = _Axis(g.input_shape[2], g.output_shape[2], g.window[0], g.stride[0], g.padding[0])
    planes = block[0].shape[0] * block[0].shape[1]
    x_row = compute.itemsize * planes * math.prod(g.input_shape[3:])
    y_row = compute.itemsize * planes * math.prod(g.output_shape[3:])
    # Either way a band holds len(block) arrays of x's rows and one of y's: forward ops read x-shaped
    # arrays and write a y-shaped result, backward ones read dy (and x, for max) and write dx.
    step = _band_step(ax, len(block) * x_row + y_row // ax.stride, forward)
    group = _kernel_row_group(g)
    if group * ax.stride * (len(block) * x_row) > _chunks.MIN_BUDGET_BYTES // 4:
        # Bands on the kernels' groups would be huge (overlapping windows at strides of dozens on
        # both axes): bands of any rows, whose sums may then differ from one plane's in the last bit.
        group = 1
    bands = _forward_bands(ax, step) if forward else _backward_bands(ax, step, group)
    for band in bands:
        if band.r0 >= band.r1:  # rows no window reaches (between windows, past the last) get no gradient
            result[:, :, band.a : band.b] = 0
            continue
        shape = block[0].shape[:2] + (band.hi - band.lo,) + tuple(g.input_shape[3:])
        bg = core.pool_geometry("pool", shape, window=g.window, padding=g.padding, stride=g.stride,
                                mode=g.cudnn_mode, nan_opt=g.nan_opt)
        first = band.lo // ax.stride  # the band's output row 0 is this output row of the plane
        if forward:
            args = [np.require(a[:, :, band.lo : band.hi], compute, ["C", "A"]) for a in block]
        else:
            args = [np.require(a[:, :, band.lo : band.hi], compute, ["C", "A"]) for a in block[:-1]]
            dy = np.zeros(bg.output_shape, compute)
            dy[:, :, band.r0 - first : band.r1 - first] = block[-1][:, :, band.r0 : band.r1]
            args.append(dy)
        out = kernel(op, bg, alpha, dtype).call(*args)
        at = first if forward else band.lo  # result row `at` is the band result's row 0
        result[:, :, band.a : band.b] = out[:, :, band.a - at : band.b - at]


def _band_step(ax: _Axis, bytes_per_row: int, forward: bool) -> int:
    """Result rows per band: bands of about POOL_BLOCK_BYTES of scratch (bytes_per_row per input
    row), but deep enough that the rows neighbouring bands both read (where windows overlap) at
    most about double the work."""
    w, s = ax.window, ax.stride
    rows = max(_chunks.POOL_BLOCK_BYTES // max(bytes_per_row, 1), w + max(0, w - s))
    # A forward band of k output rows reads (k - 1) * s + w input rows; a backward band of n dx
    # rows reads up to n + 2 * (w - 1) + s - 1.
    return (rows - w) // s + 1 if forward else max(rows - 2 * w, w)


def _forward_bands(ax: _Axis, step: int):
    """Bands for output rows [r0, r1) in steps of `step`: input rows from the first one a window of
    r0 reads (rounded down to a multiple of the stride, so the band's windows are the plane's) to
    the last one r1 - 1 reads."""
    for r0 in range(0, ax.out, step):
        r1 = min(r0 + step, ax.out)
        lo = max(0, r0 * ax.stride - ax.pad) // ax.stride * ax.stride
        hi = min(ax.size, (r1 - 1) * ax.stride - ax.pad + ax.window)
        yield _Band(lo, hi, r0, r1, r0, r1)


def _backward_bands(ax: _Axis, step: int, group: int):
    """Bands for input (dx) rows [a, b) with the output rows [r0, r1) whose windows touch them.
    Steps are whole groups of output rows (see _kernel_row_group), and bands start window - 1 rows
    past a step: the windows touching a band start at or after that step, where the band's input
    starts, on a group's first row. Input ends where the plane leaves the same rows past its last
    window (the kernels assign instead of adding where windows tile the input exactly, which
    differs for -0)."""
    s, unit = ax.stride, group * ax.stride
    step = -(-step // unit) * unit
    starts = [0, *range(step + ax.window - 1, ax.size, step)]
    for a, b in zip(starts, starts[1:] + [ax.size]):
        r0 = max(0, (a + ax.pad - ax.window) // s + 1)
        r1 = min(ax.out, (b + ax.pad - 1) // s + 1)
        lo = min(a, max(0, r0 * s - ax.pad)) // unit * unit
        hi = min(ax.size, max(b, (r1 - 1) * s - ax.pad + ax.window))
        yield _Band(lo, hi + (ax.size - hi) % s, r0, r1, a, b)


def _kernel_row_group(g) -> int:
    """How many output rows along the first spatial axis the backward kernels group together, from
    the first row whose windows miss the padding: windows overlapping along that axis add into the
    same cells in an order that depends on the grouping, so a band must start on a group's first
    row for its sums to be the plane's bit for bit. This mirrors csrc/core/cpu_pool.cpp's
    for_each_band (test_pool_bands fails if the two part): 2-D, rows of (S / interior columns)
    windows; 1-D, tiles of S windows, S = core.cpu_pool_scratch_windows. 3-D kernels take each
    first-axis row whole, and without overlap every cell's windows lie in one row."""
    if g.spatial_dims == 3 or g.stride[0] >= g.window[0]:
        return 1
    if g.spatial_dims == 1:
        return core.cpu_pool_scratch_windows
    size, out, window, stride, pad = g.input_shape[3], g.output_shape[3], g.window[1], g.stride[1], g.padding[1]
    lo = min(-(-pad // stride), out)  # the columns whose windows lie inside the input
    last_inside = size - window + pad
    hi = lo if last_inside < 0 else min(max(last_inside // stride + 1, lo), out)
    return max(1, core.cpu_pool_scratch_windows // min(max(hi - lo, 1), core.cpu_pool_scratch_windows))
