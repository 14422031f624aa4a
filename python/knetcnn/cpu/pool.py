"""Pooling on the CPU: max and average pooling, their gradients, and Knet's unpool.

The work is done by compiled kernels (csrc/core/cpu_pool.cpp: one pass over each (batch,
channel) plane, planes spread over threads); this file maps Knet's ops onto them and feeds
them aligned, C-contiguous arrays of the compute dtype. float32 and float64 arrays that already
are go in one call, without a copy; anything else (float16, computed in float32, strided or
misaligned input) is converted in blocks of whole planes, so scratch stays bounded.

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
from typing import Callable

import numpy as np

from .._core import core
from . import _chunks
from ._layout import compute_dtype


def _by_planes(kernel: Callable, arrays: tuple[np.ndarray, ...], result_spatial, out_dtype) -> np.ndarray:
    """kernel(*arrays) -> (N, C, *result_spatial), each array given aligned and C-contiguous in the
    compute dtype: in one call when they already are, else in blocks of (batch, channel) planes."""
    dtype = compute_dtype(out_dtype)
    for a in arrays:
        if not (a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned):
            break
    else:
        return kernel(*arrays)
    n, c = arrays[0].shape[:2]
    result = np.empty((n, c) + tuple(result_spatial), dtype=out_dtype)
    per_plane = dtype.itemsize * max(math.prod(a.shape[2:]) for a in arrays + (result,))
    for items, chans in _chunks.channel_blocks(n, c, per_plane):
        block = (np.require(a[items, chans], dtype=dtype, requirements=["C", "A"]) for a in arrays)
        result[items, chans] = kernel(*block)
    return result


def forward(x: np.ndarray, g, alpha: float, *, scale: float | None = None) -> np.ndarray:
    """y = alpha * pool(x) with the geometry's mode (unpoolx: the mapped mode, times `scale`)."""
    factor = alpha if scale is None else scale
    all_nan = -float(np.finfo(x.dtype).max)
    kernel = lambda xb: core.cpu_pool_forward(g, xb, g.cudnn_mode, factor, all_nan)  # noqa: E731
    return _by_planes(kernel, (x,), g.output_shape[2:], x.dtype)


def _average_backward(dy: np.ndarray, g, scale: float) -> np.ndarray:
    """Every in-bounds cell of a window receives scale * dy / divisor."""
    kernel = lambda dyb: core.cpu_average_pool_backward(g, dyb, g.cudnn_mode, scale)  # noqa: E731
    return _by_planes(kernel, (dy,), g.input_shape[2:], dy.dtype)


def backward(x: np.ndarray, dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """poolx: dL/dx for L = <dy, pool(x)>."""
    if g.cudnn_mode in (0, 3):
        kernel = lambda xb, dyb: core.cpu_max_pool_backward(g, xb, dyb, alpha)  # noqa: E731
        return _by_planes(kernel, (x, dy), g.input_shape[2:], x.dtype)
    return _average_backward(dy, g, alpha).astype(x.dtype, copy=False)


def unpool(x: np.ndarray, g, alpha: float) -> np.ndarray:
    """Knet's unpool: the average-pool backward (mapped mode) of x * prod(window), over alpha."""
    return _average_backward(x, g, math.prod(g.window) / alpha)


def unpoolx(dy: np.ndarray, g, alpha: float) -> np.ndarray:
    """unpool's gradient: prod(window) * pool(dy, mode=mapped, alpha=1/alpha)."""
    return forward(dy, g, 1.0, scale=math.prod(g.window) / alpha)
