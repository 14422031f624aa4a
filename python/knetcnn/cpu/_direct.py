"""Direct convolution (csrc/core/cpu_conv_direct.cpp) for short reductions at stride 1.

When each output sums over few terms (LeNet's first layer: 1 channel x 25 taps), im2col's copy
and a thin BLAS product cost more than the arithmetic; the direct kernel keeps a tile of outputs
in registers and reads x in place. With one output per group and many channels x row taps
(LeNet's conv4x) it keeps input columns in registers instead and scatters them into the output
rows (csrc/core/cpu_conv_columns), multiplying none of the padding. It serves 1-D and 2-D
convolutions at stride 1 (any padding, dilation, groups, mode) whose arrays are in the compute
dtype (any byte order); everything else stays with im2col + BLAS (conv.py).

conv4x and deconv4 run here as a forward convolution of dy with w's flipped transpose:
    dx[n, c, i] = sum_{o, a} w'[o, c, a] * dy[n, o, i + pad - a*dil]
                = sum_{o, a'} v[c, o, a'] * dy[n, o, i - pad' + a'*dil],
with v[c, o, a'] = w'[o, c, K-1-a'] (per group) and pad' = (K-1)*dil - pad, which may be
negative; the kernel reads zeros outside dy, so any output size works.
"""

from __future__ import annotations

import math

import numpy as np

from .._core import core
from . import _chunks, _results
from ._layout import ready, result_dtype

# The longest reduction (input channels per group x taps) sent to the direct kernel, measured
# against im2col + OpenBLAS (2 cores) as bench/cpu.py measures, right after a pause. float64:
# LeNet-1's conv4 (1 channel x 25 taps) 0.8-1.0 vs 1.5-2.1 ms; its conv4x (20 x 25) 1.8 vs
# 2.2-2.5 ms; LeNet-2's conv4 (500) even; VGG's conv4 (576) lost, 37-50 vs 31-38 ms, and
# ResNet's (2304) 36 vs 26. float32, whose GEMM is twice as fast: LeNet-1's conv4 0.75 vs 1.24
# ms, but LeNet-2's conv4x (1250) 6.6 vs 3.8.
MAX_REDUCTION = {np.dtype(np.float64): 500, np.dtype(np.float32): 64}


# The kernel reads a zero-padded copy of the rows a task reaches where they pass the data's edge:
# per axis, the output's extent + (K-1)*dilation cells. Huge padding or dilation would make that
# copy, and the time to fill it, enormous where im2col's columns stay small (a 2 x 2 x with
# dilation 10**6 and padding 5 * 10**5 gives a 1 x 1 output and a 10**12-cell reach), so the
# kernel only takes convolutions whose reach is within a few times the output, plus a small
# plane's worth (LeNet-1's conv4x reaches 32 x 32 cells for its 28 x 28 outputs).
MAX_REACH_GROWTH = 4
REACH_ALLOWANCE = 1 << 16  # cells


def reach_fits(cv, out_spatial) -> bool:
    """Whether the cells reached for outputs of this spatial extent are few enough (see above)."""
    reach = math.prod(o + (k - 1) * d for o, k, d in zip(out_spatial, cv.k, cv.dilation))
    return reach <= MAX_REACH_GROWTH * math.prod(out_spatial) + REACH_ALLOWANCE


def usable(cv, reduction: int, wm: np.ndarray, data: np.ndarray, result_shape) -> bool:
    """Whether the direct kernel takes this convolution of `data` (x, or dy for backward data)
    with weights wm into a result of result_shape: reduction = terms per output.

    The kernel reads data whole, so data that is not C-contiguous and aligned is copied whole
    first: only where that copy is within the memory budget (_chunks: a few times the result, or
    256 MiB); im2col converts larger ones a block at a time.

    Only finite weights: the kernel also multiplies weights by the zeros it reads outside the
    data (padding, and dy's border in backward data), products the formula does not have; for a
    finite weight they are exact zeros, for inf or NaN they would be NaN.
    """
    return (
        cv.d <= 2
        and all(s == 1 for s in cv.stride)
        and reduction <= MAX_REDUCTION.get(wm.dtype, 0)
        and result_dtype(data.dtype) == wm.dtype  # any byte order: _planar converts
        and reach_fits(cv, result_shape[2:])
        and (ready(data, wm.dtype) or data.nbytes <= _chunks.budget(math.prod(result_shape) * wm.itemsize))
        and bool(np.isfinite(wm).all())
    )


def _planar(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """a as a C-contiguous, aligned 4-D (N, C, H, W) array: 1-D data gets H = 1."""
    a = np.require(a, dtype=dtype, requirements=["C", "A"])
    return a.reshape(a.shape[:2] + (1,) * (4 - a.ndim) + a.shape[2:])


def _lifted(cv, values, height: int) -> tuple[int, int]:
    """Per-axis values as (height, width); 1-D convolutions get `height` for the added axis."""
    return tuple(values) if cv.d == 2 else (height, values[0])


def forward(wm: np.ndarray, x: np.ndarray, cv) -> np.ndarray:
    """y = conv(w', x) at stride 1, wm being alpha * w' as (G, Og, Cg*K)."""
    dtype = wm.dtype
    w = wm.reshape((cv.o, cv.cg) + (1,) * (2 - cv.d) + cv.k)
    y = _results.empty(cv.output_shape, dtype)
    core.conv_direct(_planar(x, dtype), np.ascontiguousarray(w), _planar(y, dtype), cv.groups,
                     _lifted(cv, cv.pads, 0), _lifted(cv, cv.dilation, 1))  # fmt: skip
    return y


def backward_data(wm: np.ndarray, dy: np.ndarray, cv) -> np.ndarray:
    """dx = conv(w', .)^T dy at stride 1, as the forward convolution of dy with w's flipped transpose."""
    dtype = wm.dtype
    flip = (slice(None),) * 3 + (slice(None, None, -1),) * cv.d
    v = wm.reshape((cv.groups, cv.og, cv.cg) + cv.k)[flip].transpose(0, 2, 1, *range(3, 3 + cv.d))
    v = np.ascontiguousarray(v.reshape((cv.c, cv.og) + (1,) * (2 - cv.d) + cv.k))
    pads = [(k - 1) * d - p for k, d, p in zip(cv.k, cv.dilation, cv.pads)]
    dx = _results.empty(cv.input_shape, dtype)
    core.conv_direct(_planar(dy, dtype), v, _planar(dx, dtype), cv.groups,
                     _lifted(cv, pads, 0), _lifted(cv, cv.dilation, 1))  # fmt: skip
    return dx
