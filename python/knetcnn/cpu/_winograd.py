"""Winograd F(2x2, 3x3) for stride-1, undilated 3x3 2-D convolutions (Lavin & Gray, 2016).

Cut into 2x2 output tiles, a 3x3 convolution becomes 16 GEMMs, one per point of the 4x4
transformed tiles, of (Og, Cg) @ (Cg, tiles): 4 multiply-adds per output, channel and filter
where im2col's single GEMM takes 9. The compiled transforms (csrc/core/cpu_winograd) move data
between the arrays and the (16, channels, tiles) matrices; the filters' 3x3 <-> 4x4 transforms
are small and run here. With d a 4x4 input tile, e a 2x2 tile of dy, w' a 3x3 filter:

    forward:          y tile = A^T [ sum_c (G w' G^T) * (B^T d B) ] A
    backward data:    the forward convolution of dy with w's flipped transpose (as in _direct)
    backward filter:  dw' = G^T [ sum over items and tiles of (A e A^T) * (B^T d B) ] G

The transforms add and subtract neighbouring cells, so an infinity or NaN in one cell would
spoil outputs that never read it (inf - inf), and values near the dtype's limit could overflow
where the plain sum does not. Only operands small enough to keep every intermediate finite take
this path (`in_range`); the rest stay with im2col, which is exact about both.
"""

from __future__ import annotations

import math

import numpy as np

from .._core import core
from . import _chunks, _results
from ._layout import result_dtype
from ._scratch import Scratch

# Filters and channels per group below which the transforms' passes over memory cost more than
# the multiply-adds they save (measured: see MIN_CHANNELS' note in bench/RESULTS.md).
MIN_CHANNELS = 16

# Whether the transforms run on parallel_for's threads (see PARALLEL_KERNELS' note in _conv_blocks:
# OpenBLAS's threads spin after each product).
PARALLEL_KERNELS = True

# Tiles per block: the transformed input and the products of a block stay within a few MiB.
TILES_PER_BLOCK = 512

POINTS = 16
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# G w G^T of a 3x3 w, flattened: (G (x) G) @ w.ravel(). One GEMM transforms every filter at once
# (an einsum over the five indices took 11 ms for ResNet's 65536 filters).
_KRON = {np.dtype(t): np.kron(_G, _G).astype(t) for t in (np.float32, np.float64)}

# How many times larger than the largest |a| * |b| times the number of terms an intermediate can
# grow. Each transform multiplies magnitudes by at most the largest row sum of |entries| of its
# matrix, once per side: B^T and A 2 (x4), G 1.5 (x2.25), A^T 3 (x9), G^T 2 (x4).
# Forward and backward data: 4 * 2.25 * 9; backward filter: 4 * 4 * 4.
GROWTH_FORWARD = 81
GROWTH_FILTER = 64


def usable(cv, data: np.ndarray, dtype: np.dtype, tiled: tuple[int, ...], result_bytes: int) -> bool:
    """Whether the convolution's geometry and dtypes suit F(2x2, 3x3), and one item's transformed
    matrices fit the memory budget (_chunks: a few times the result, or 256 MiB); `data` is x (or
    dy), `tiled` the shape of the array cut into 2x2 tiles (the result, or dy for conv4w)."""
    return (
        cv.d == 2
        and cv.k == (3, 3)
        and cv.stride == (1, 1)
        and cv.dilation == (1, 1)
        and all(0 <= p <= 2 for p in cv.pads)
        and min(cv.cg, cv.og) >= MIN_CHANNELS
        and result_dtype(data.dtype) == dtype  # any byte order: _block converts
        and dtype in (np.float32, np.float64)
        and _scratch_bytes(cv, 1, tiled, dtype.itemsize) <= _chunks.budget(result_bytes)
    )


def _scratch_bytes(cv, items: int, tiled: tuple[int, ...], itemsize: int) -> int:
    """Scratch for a block of `items`: the 16 points' (channels + filters, tiles) matrices, and the
    transformed filters or filter sums (twice over: sums and one block's product)."""
    tiles_h, tiles_w = _tiles(tiled)
    return itemsize * POINTS * ((cv.c + cv.o) * items * tiles_h * tiles_w + 2 * cv.o * cv.cg)


def _magnitude(a: np.ndarray) -> float:
    """The largest |a|, inf where a holds NaN or an infinity (max and min propagate NaN)."""
    if a.size == 0:
        return 0.0
    hi, lo = float(np.max(a)), float(np.min(a))
    return math.inf if math.isnan(hi) or math.isnan(lo) else max(abs(hi), abs(lo))


def in_range(a: np.ndarray, b: np.ndarray, terms: int, growth: int) -> bool:
    """Whether sums of `terms` products of a's and b's values, grown `growth` times by the
    transforms, stay finite with room to spare (False for any NaN or infinity)."""
    limit = float(np.finfo(a.dtype).max) / 2
    bound = _magnitude(a) * _magnitude(b)
    return bound * terms * growth < limit  # inf or nan fails


def _tiles(shape: tuple[int, ...]) -> tuple[int, int]:
    return -(-shape[2] // 2), -(-shape[3] // 2)


def _blocks(cv, tiled: tuple[int, ...], itemsize: int, result_bytes: int):
    """Ranges of items of about TILES_PER_BLOCK tiles, within the memory budget (at least one item:
    usable() has checked that one fits)."""
    tiles_h, tiles_w = _tiles(tiled)
    step = max(1, TILES_PER_BLOCK // max(tiles_h * tiles_w, 1))
    while step > 1 and _scratch_bytes(cv, step, tiled, itemsize) > _chunks.budget(result_bytes):
        step //= 2
    for n0 in range(0, cv.n, step):
        yield n0, min(cv.n, n0 + step)


def _block(a: np.ndarray, n0: int, n1: int, dtype: np.dtype) -> np.ndarray:
    """Items [n0, n1) of a as the transforms read them: C-contiguous and aligned. A strided or
    Fortran-order array is copied a block at a time, so the copies stay within the blocks' budget
    (a whole copy of x could be many times the result: conv4w's result is only the filters)."""
    return np.require(a[n0:n1], dtype=dtype, requirements=["C", "A"])


def _transformed_filters(w: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """G w G^T of every 3x3 filter of w (..., 3, 3), as the 16 points' (G, rows, columns)
    matrices, shape = (G, rows, columns)."""
    flat = w.reshape(-1, 9)
    return np.matmul(_KRON[w.dtype], flat.T).reshape((POINTS,) + shape)


def _convolve(cv, u: np.ndarray, data: np.ndarray, out: np.ndarray, pads) -> None:
    """out = the 3x3 convolution of data with the transformed filters u, (16, G, Og, Cg), from
    top-left padding `pads`; out's size is free (cells past data read zeros)."""
    tiles_h, tiles_w = _tiles(out.shape)
    channels, outputs, groups = data.shape[1], out.shape[1], cv.groups
    with Scratch(u.dtype) as scratch:
        for n0, n1 in _blocks(cv, out.shape, u.itemsize, out.nbytes):
            tiles = (n1 - n0) * tiles_h * tiles_w
            v = scratch.array("winograd_v", (POINTS, channels, tiles))
            core.winograd_input(_block(data, n0, n1, u.dtype), v, tiles_h, tiles_w, pads[0], pads[1],
                                parallel=PARALLEL_KERNELS)  # fmt: skip
            m = scratch.array("winograd_m", (POINTS, outputs, tiles))
            np.matmul(u, v.reshape(POINTS, groups, -1, tiles), out=m.reshape(POINTS, groups, -1, tiles))
            core.winograd_output(m, out[n0:n1], parallel=PARALLEL_KERNELS)


def forward(wm: np.ndarray, x: np.ndarray, cv) -> np.ndarray:
    """y = conv(w', x), wm being alpha * w' as (G, Og, Cg*9)."""
    y = _results.empty(cv.output_shape, wm.dtype)
    u = _transformed_filters(wm, (cv.groups, cv.og, cv.cg))
    _convolve(cv, u, x, y, cv.pads)
    return y


def backward_data(wm: np.ndarray, dy: np.ndarray, cv) -> np.ndarray:
    """dx = conv(w', .)^T dy: the forward convolution of dy with w's flipped transpose, from
    padding 2 - pad (0 <= pad <= 2, so never negative)."""
    flipped = wm.reshape(cv.groups, cv.og, cv.cg, 3, 3)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    u = _transformed_filters(np.ascontiguousarray(flipped), (cv.groups, cv.cg, cv.og))
    dx = _results.empty(cv.input_shape, wm.dtype)
    _convolve(cv, u, dy, dx, [2 - p for p in cv.pads])
    return dx


def backward_filter(x: np.ndarray, dy: np.ndarray, cv, add_product) -> np.ndarray:
    """sum over items and positions of dy (x) x's 3x3 neighbourhoods, as (G, Og, Cg*9) in
    cross-correlation order (the caller flips it for mode 0 and applies alpha). add_product(acc,
    a, b, product) adds a @ b^T for stacks of matrices."""
    dtype = result_dtype(x.dtype)
    tiles_h, tiles_w = _tiles(dy.shape)
    stacks = POINTS * cv.groups
    sums = np.zeros((stacks, cv.og, cv.cg), dtype=dtype)
    product = np.empty_like(sums)
    with Scratch(dtype) as scratch:
        for n0, n1 in _blocks(cv, dy.shape, dtype.itemsize, math.prod(cv.filter_shape) * dtype.itemsize):
            tiles = (n1 - n0) * tiles_h * tiles_w
            v = scratch.array("winograd_v", (POINTS, cv.c, tiles))
            core.winograd_input(_block(x, n0, n1, dtype), v, tiles_h, tiles_w, cv.pads[0], cv.pads[1],
                                parallel=PARALLEL_KERNELS)  # fmt: skip
            g = scratch.array("winograd_m", (POINTS, cv.o, tiles))
            core.winograd_gradient(_block(dy, n0, n1, dtype), g, parallel=PARALLEL_KERNELS)
            add_product(sums, g.reshape(stacks, cv.og, tiles), v.reshape(stacks, cv.cg, tiles), product)
    # G^T m G of every filter's 4x4 sums m: (m.ravel() @ (G (x) G)), all filters in one GEMM.
    dw = np.matmul(sums.reshape(POINTS, -1).T, _KRON[dtype])
    return dw.reshape(cv.groups, cv.og, cv.cg * 9)


def filter_terms(cv) -> int:
    """Tiles summed into one point of a filter gradient: items x tiles per item of dy."""
    tiles_h, tiles_w = _tiles(cv.output_shape)
    return cv.n * tiles_h * tiles_w
