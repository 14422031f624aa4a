"""Convolution on the CPU: im2col gather, one BLAS product per group, col2im scatter-add.

All three directions are written in conv4's forward terms, read from the core's geometry `g`:
input (N, C, *X), filter (O, C // group, *K), output (N, O, *Y); for deconv4 the caller swaps
the roles (deconv4 is `backward_data`). Sizes always come from the geometry, never from formulas
here, so deconv4's output_padding (an input larger than conv4 would need) just works: rows that no
kernel position reaches stay zero.

Stride-1 1-D and 2-D convolutions with short reductions go to the direct kernel instead
(_direct.py): no columns, no BLAS. Stride-1, undilated 3x3 2-D convolutions with many channels
go to Winograd F(2x2, 3x3) (_winograd.py): 16 smaller GEMMs with 2.25x fewer multiply-adds.

The only Python loop runs over blocks (see _conv_blocks). For each block the compiled im2col
gathers `col[c, k, n, *y] = xpad[n, c, y*s + k*dil]`, then `(G, Og, Cg*K) @ (G, Cg*K, n*Y)` runs
as a single batched GEMM; backward-data's product is scattered back by the compiled col2im.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import _direct, _results, _winograd
from ._conv_blocks import ConvShape
from ._layout import compute_dtype, result_dtype
from ._scratch import Scratch
from ._weights import Weights, flipped


def _columns(cv: ConvShape, b, scratch: Scratch) -> np.ndarray:
    """This block's (C*K, columns) matrix: gathered columns, or backward-data's product."""
    return scratch.array("columns", (cv.c * cv.kp, cv.columns(b)))


def _gradient(cv: ConvShape, dy: np.ndarray, b, dtype: np.dtype, scratch: Scratch) -> np.ndarray:
    """dy[block] as the GEMM's (O, columns): a view of dy where one exists, else a copy."""
    view = cv.matrix_view(dy, b, dtype)
    return cv.load(dy, b, scratch) if view is None else view


def _by_fast_kernels(cv, wm, data, reduction: int, result_shape, result_bytes: int, direct: Callable,
                     winograd: Callable):  # fmt: skip
    """The direct kernel's or Winograd's result of convolving `data` (x, or dy for backward data)
    with wm, where one of them takes this convolution; else None (im2col's). Weights too big to
    copy whole (wm None) are left to im2col, which scales them a slab at a time."""
    if wm is None:
        return None
    if _direct.usable(cv, reduction, wm, data, result_shape):
        return direct(wm, data, cv)
    if _winograd.usable(cv, data, wm.dtype, result_shape, result_bytes) and _winograd.in_range(
        wm, data, reduction, _winograd.GROWTH_FORWARD
    ):
        return winograd(wm, data, cv)
    return None


def forward(w: np.ndarray, x: np.ndarray, g, alpha: float) -> np.ndarray:
    """y = alpha * conv(w', x): conv4(w, x), and deconv4x(w, ., dy) with x = dy."""
    cv = ConvShape(g)
    dtype = compute_dtype(x.dtype)
    result_bytes = math.prod(cv.output_shape) * dtype.itemsize
    weights = Weights(w, cv, alpha, dtype, result_bytes)
    fast = _by_fast_kernels(cv, weights.whole, x, cv.cg * cv.kp, cv.output_shape, result_bytes, _direct.forward,
                            _winograd.forward)  # fmt: skip
    if fast is not None:
        return fast
    y = _results.empty(cv.output_shape, result_dtype(x.dtype))
    with Scratch(dtype) as scratch:
        for b in cv.blocks(y.nbytes, dtype.itemsize):
            col = _columns(cv, b, scratch)
            cv.gather(x, b, col, scratch)
            direct = cv.matrix_view(y, b, dtype)
            out = scratch.array("product", (cv.o, col.shape[1])) if direct is None else direct
            weights.forward_product(col, out)
            if direct is None:
                cv.store(y, b, out)
    return y


def backward_data(w: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """dx = alpha * conv(w', .)^T dy: conv4x(w, x, dy), and deconv4(w, x) with dy = x."""
    cv = ConvShape(g)
    dtype = compute_dtype(dy.dtype)
    result_bytes = math.prod(cv.input_shape) * dtype.itemsize
    weights = Weights(w, cv, alpha, dtype, result_bytes)
    fast = _by_fast_kernels(cv, weights.whole, dy, cv.og * cv.kp, cv.input_shape, result_bytes,
                            _direct.backward_data, _winograd.backward_data)  # fmt: skip
    if fast is not None:
        return fast
    dx = _results.zeros(cv.input_shape, dtype)
    with Scratch(dtype) as scratch:
        for b in cv.blocks(dx.nbytes, dtype.itemsize):
            dcol = _columns(cv, b, scratch)
            weights.backward_data_product(_gradient(cv, dy, b, dtype, scratch), dcol)
            cv.scatter(dcol, dx, b)
    return dx.astype(result_dtype(dy.dtype), copy=False)


# OpenBLAS runs a long, thin product (a few hundred outputs, tens of thousands of terms each) at
# a fraction of its speed; cut into pieces of this many terms, it runs 2-3x faster (LeNet's conv4w).
THIN_OUTPUTS = 4096
PIECE = 1024

# In float32, with fewer filters than this, backward-filter's product runs faster transposed, as
# (Cg*K, columns) @ (columns, Og): OpenBLAS's sgemm serves a short first side poorly. Whole conv4w
# calls, interleaved A/B in two runs: VGG (64 filters) 0.82 (and a noisy 0.42), AlexNet (96) 0.84
# and 0.93, LeNet-2 (50) 0.84 and 1.00 of the time.
# Not in float64: AlexNet 1.05-1.07, VGG 1.02-1.06, LeNet-2 0.70 and 1.02 in two runs; nor with
# ResNet's 256 filters (the product alone: float64 6-10% slower, float32 3-7% faster).
TRANSPOSED_BELOW_FILTERS = 128


def _add_product_nt(acc: np.ndarray, a: np.ndarray, b: np.ndarray, product: np.ndarray) -> None:
    """acc += a @ b^T for a (G, M, L) and b (G, N, L); product is (G, M, N) scratch."""
    groups, m, length = a.shape
    n = b.shape[1]
    pieces = length // PIECE
    if m * n > THIN_OUTPUTS or pieces < 4:
        np.matmul(a, b.transpose(0, 2, 1), out=product)
        acc += product
        return
    cut = pieces * PIECE
    a_pieces = a[..., :cut].reshape(groups, m, pieces, PIECE).transpose(0, 2, 1, 3)
    b_pieces = b[..., :cut].reshape(groups, n, pieces, PIECE).transpose(0, 2, 3, 1)
    acc += np.matmul(a_pieces, b_pieces).sum(axis=1)
    if cut < length:
        np.matmul(a[..., cut:], b[..., cut:].transpose(0, 2, 1), out=product)
        acc += product


# Backward-filter products of at most THIN_OUTPUTS sums with at least this many positions per
# item take dy in place, item by item (_items_view), rather than as a transposed copy: LeNet-1's
# float64 conv4w spent ~15% of its time copying dy.
MIN_ITEM_POSITIONS = 512


def _items_view(dy: np.ndarray, b, cv: ConvShape, dtype: np.dtype) -> np.ndarray | None:
    """dy[block] as (items, G, Og, positions) without a copy, or None where the product is better
    served by _add_product_nt (wide sums, short items, or dy not readable in place)."""
    if cv.og * cv.cg * cv.kp > THIN_OUTPUTS or cv.columns(b) // (b.n1 - b.n0) < MIN_ITEM_POSITIONS:
        return None
    return cv.items_view(dy, b, dtype)


def _add_product_by_items(sums: np.ndarray, dy_items: np.ndarray, grouped_col: np.ndarray) -> None:
    """sums (G, Og, Cg*K) += sum over items of dy_items[n] @ (the item's columns)^T, the columns
    (G, Cg*K, items * positions) being item-major."""
    items, groups, _, positions = dy_items.shape
    col_items = grouped_col.reshape(groups, -1, items, positions).transpose(2, 0, 3, 1)
    sums += np.matmul(dy_items, col_items).sum(axis=0)


def backward_filter(x: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """dw = alpha * sum_n dy (x) columns, in w's stored orientation: conv4w, and deconv4w (x = dy)."""
    cv = ConvShape(g)
    dtype, out_dtype = compute_dtype(x.dtype), result_dtype(x.dtype)
    if (
        _winograd.usable(cv, x, dtype, cv.output_shape, math.prod(cv.filter_shape) * dtype.itemsize)
        and result_dtype(dy.dtype) == dtype
        and _winograd.in_range(x, dy, _winograd.filter_terms(cv), _winograd.GROWTH_FILTER)
    ):
        return _finished_filter_gradient(_winograd.backward_filter(x, dy, cv, _add_product_nt), cv, alpha, out_dtype)
    # Sums (G, Og, Cg*K), or its transpose (G, Cg*K, Og) where that product is faster.
    transposed = dtype == np.float32 and cv.og < TRANSPOSED_BELOW_FILTERS and cv.og * cv.cg * cv.kp > THIN_OUTPUTS
    sums = np.zeros((cv.groups, cv.cg * cv.kp, cv.og) if transposed else (cv.groups, cv.og, cv.cg * cv.kp), dtype=dtype)
    product = np.empty_like(sums)
    with Scratch(dtype) as scratch:
        for b in cv.blocks(sums.nbytes, dtype.itemsize):
            col = _columns(cv, b, scratch)
            cv.gather(x, b, col, scratch)
            grouped_col = col.reshape(cv.groups, cv.cg * cv.kp, -1)
            by_items = None if transposed else _items_view(dy, b, cv, dtype)
            if by_items is not None:
                _add_product_by_items(sums, by_items, grouped_col)
                continue
            grouped = _gradient(cv, dy, b, dtype, scratch).reshape(cv.groups, cv.og, -1)
            if transposed:
                _add_product_nt(sums, grouped_col, grouped, product)
            else:
                _add_product_nt(sums, grouped, grouped_col, product)
    return _finished_filter_gradient(sums.transpose(0, 2, 1) if transposed else sums, cv, alpha, out_dtype)


def _finished_filter_gradient(sums: np.ndarray, cv: ConvShape, alpha: float, dtype: np.dtype) -> np.ndarray:
    """dw from the cross-correlation sums (G, Og, Cg*K): in w's shape, flipped for mode 0, times alpha."""
    dw = sums.reshape(cv.filter_shape)
    if cv.mode == 0:
        dw = flipped(dw, cv.d)
    return np.multiply(dw, alpha, dtype=sums.dtype, order="C").astype(dtype, copy=False)
