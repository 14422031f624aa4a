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

from typing import Callable

import numpy as np

from . import conv, pool

# op -> how it maps onto the three convolution directions and the pooling kernels.
_OPS: dict[str, Callable] = {
    "conv4": lambda a, g, alpha: conv.forward(a[0], a[1], g, alpha),
    "conv4w": lambda a, g, alpha: conv.backward_filter(a[1], a[2], g, alpha),
    "conv4x": lambda a, g, alpha: conv.backward_data(a[0], a[2], g, alpha),
    # deconv4 is conv4's transpose: its geometry's "input" is deconv4's result.
    "deconv4": lambda a, g, alpha: conv.backward_data(a[0], a[1], g, alpha),
    "deconv4w": lambda a, g, alpha: conv.backward_filter(a[2], a[1], g, alpha),
    "deconv4x": lambda a, g, alpha: conv.forward(a[0], a[2], g, alpha),
    "pool": lambda a, g, alpha: pool.forward(a[0], g, alpha),
    "poolx": lambda a, g, alpha: pool.backward(a[0], a[2], g, alpha),
    "unpool": lambda a, g, alpha: pool.unpool(a[0], g, alpha),
    "unpoolx": lambda a, g, alpha: pool.unpoolx(a[2], g, alpha),
}


def run(op: str, arrays: tuple[np.ndarray, ...], geometry, alpha: float) -> np.ndarray:
    # Byte-swapped input is read in native order; results are always native.
    if not all(a.dtype.isnative for a in arrays):
        arrays = tuple(a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")) for a in arrays)
    with np.errstate(all="ignore"):
        return _OPS[op](arrays, geometry, alpha)
