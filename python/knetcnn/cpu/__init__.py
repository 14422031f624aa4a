"""The exact NumPy CPU backend: every op of the family, on NumPy arrays, in their dtype.

Called by knetcnn's public functions after all validation (types, dtypes, the core's geometry,
gradient shapes): `run(op, arrays, geometry, alpha)` with `arrays` in the op's own argument order.
float16 is computed in float32 and rounded once; float32 and float64 are computed in their own
type. Convolutions are compiled im2col / col2im around BLAS GEMMs (conv.py), or a compiled
direct kernel for stride-1 convolutions with short reductions (_direct.py); pooling is compiled
kernels throughout (pool.py); all live in the C++ core (csrc/core/cpu_*).
Results follow IEEE arithmetic silently, as on the GPU: overflow gives inf, inf - inf gives NaN,
and no NumPy floating-point warnings are raised.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from . import conv, pool
from ._layout import ready

# op -> how it maps onto the three convolution directions and the pooling kernels.
_OPS: dict[str, Callable] = {
    "conv4": lambda a, g, alpha: conv.forward(a[0], a[1], g, alpha),
    "conv4w": lambda a, g, alpha: conv.backward_filter(a[1], a[2], g, alpha),
    "conv4x": lambda a, g, alpha: conv.backward_data(a[0], a[2], g, alpha),
    # deconv4 is conv4's transpose: its geometry's "input" is deconv4's result.
    "deconv4": lambda a, g, alpha: conv.backward_data(a[0], a[1], g, alpha),
    "deconv4w": lambda a, g, alpha: conv.backward_filter(a[2], a[1], g, alpha),
    "deconv4x": lambda a, g, alpha: conv.forward(a[0], a[2], g, alpha),
}
_POOL_OPS = ("pool", "poolx", "unpool", "unpoolx")
_OPS.update({op: functools.partial(pool.run, op) for op in _POOL_OPS})
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def run(op: str, arrays: tuple[np.ndarray, ...], geometry, alpha: float) -> np.ndarray:
    # Byte-swapped input is converted a block at a time as the kernels read it; results are native.
    with np.errstate(all="ignore"):
        return _OPS[op](arrays, geometry, alpha)


def planned(op: str, geometry, alpha: float, dtype: np.dtype) -> Callable[[tuple], np.ndarray]:
    """run(op, ·, geometry, alpha) for arrays of `dtype`, with what can be chosen once chosen once
    (knetcnn._plans keeps these for repeated calls). Pooling ops on float32 / float64 arrays that
    are C-contiguous and aligned go straight to their kernel: no conversion can happen there, so
    no floating-point state needs guarding, and a LeNet-sized poolx saves a third of its time."""
    if op not in _POOL_OPS or dtype not in _KERNEL_DTYPES:
        return lambda arrays: run(op, arrays, geometry, alpha)
    kernel = pool.kernel(op, geometry, alpha, dtype)

    def run_planned(arrays: tuple) -> np.ndarray:
        inputs = tuple(arrays[i] for i in kernel.inputs)
        for a in inputs:
            if not ready(a, dtype):
                return run(op, arrays, geometry, alpha)
        return kernel.call(*inputs)

    return run_planned
