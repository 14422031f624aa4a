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
from typing import Callable, NamedTuple

import numpy as np

from .._core import core
from . import _chunks
from ._layout import compute_dtype, ready


def _by_planes(kernel: Callable, arrays: tuple[np.ndarray, ...], result_spatial, out_dtype) -> np.ndarray:
    """kernel(*arrays) -> (N, C, *result_spatial), each array given aligned and C-contiguous in the
    compute dtype: in one call when they already are, else in blocks of (batch, channel) planes."""
    dtype = compute_dtype(out_dtype)
    if all(ready(a, dtype) for a in arrays):
        return kernel(*arrays)
    n, c = arrays[0].shape[:2]
    result = np.empty((n, c) + tuple(result_spatial), dtype=out_dtype)
    per_plane = dtype.itemsize * max(math.prod(a.shape[2:]) for a in arrays + (result,))
    for items, chans in _chunks.channel_blocks(n, c, per_plane):
        block = (np.require(a[items, chans], dtype=dtype, requirements=["C", "A"]) for a in arrays)
        result[items, chans] = kernel(*block)
    return result


class Kernel(NamedTuple):
    """One pooling op as a compiled kernel: ``call(*inputs)`` on whole C-contiguous, aligned arrays
    of the compute dtype, ``inputs`` the positions of the op's arrays it reads, and the spatial
    shape of its result."""

    call: Callable
    inputs: tuple[int, ...]
    result_spatial: tuple[int, ...]


def kernel(op: str, g, alpha: float, dtype: np.dtype) -> Kernel:
    """The kernel that computes `op` (pool, poolx, unpool, unpoolx) for arrays of `dtype`."""
    all_nan = -float(np.finfo(dtype).max)
    mode = g.cudnn_mode
    if op == "pool":  # y = alpha * pool(x)
        return Kernel(lambda x: core.cpu_pool_forward(g, x, mode, alpha, all_nan), (0,), g.output_shape[2:])
    if op == "poolx" and mode in (0, 3):  # each window's alpha * dy to its first maximum, recomputed from x
        return Kernel(lambda x, dy: core.cpu_max_pool_backward(g, x, dy, alpha), (0, 2), g.input_shape[2:])
    if op == "poolx":  # every in-bounds cell of a window gets alpha * dy / divisor
        return Kernel(lambda dy: core.cpu_average_pool_backward(g, dy, mode, alpha), (2,), g.input_shape[2:])
    scale = math.prod(g.window) / alpha
    if op == "unpool":  # the average-pool backward (mapped mode) of x * prod(window), over alpha
        return Kernel(lambda x: core.cpu_average_pool_backward(g, x, mode, scale), (0,), g.input_shape[2:])
    if op == "unpoolx":  # prod(window) * pool(dy, mode=mapped, alpha=1/alpha)
        return Kernel(lambda dy: core.cpu_pool_forward(g, dy, mode, scale, all_nan), (2,), g.output_shape[2:])
    raise ValueError(f"pool.kernel: {op!r} is not a pooling op")


def run(op: str, arrays: tuple[np.ndarray, ...], g, alpha: float) -> np.ndarray:
    """op's result in the dtype of its arrays, any layout or float dtype."""
    dtype = arrays[0].dtype
    k = kernel(op, g, alpha, dtype)
    return _by_planes(k.call, tuple(arrays[i] for i in k.inputs), k.result_spatial, dtype)
