"""knetcnn: Knet.jl's convolution and pooling family for Python.

Device arrays run on NVIDIA cuDNN; NumPy arrays run on an exact CPU backend. See README.md and
``help(knetcnn.conv4)``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._core import core as _core  # noqa: E402  (loads cuDNN; fails with a clear ImportError)
from ._errors import (  # noqa: E402
    CudaError,
    CudaMemoryError,
    CudnnBadParamError,
    CudnnError,
    CudnnMemoryError,
    CudnnNotSupportedError,
    DeviceUnavailableError,
)
from .api import conv4, conv4w, conv4x, deconv4, deconv4w, deconv4x, mat, pool, poolx, unpool, unpoolx  # noqa: E402
from .describe import describe  # noqa: E402
from .device.knet_array import KnetArray  # noqa: E402
from .info import info  # noqa: E402
from .options import cache_info, clear_cache, get_options, load_cache, options, save_cache, set_options  # noqa: E402

__all__ = [
    "CudaError",
    "CudaMemoryError",
    "CudnnBadParamError",
    "CudnnError",
    "CudnnMemoryError",
    "CudnnNotSupportedError",
    "DeviceUnavailableError",
    "KnetArray",
    "cache_info",
    "clear_cache",
    "conv4",
    "conv4w",
    "conv4x",
    "deconv4",
    "deconv4w",
    "deconv4x",
    "get_options",
    "describe",
    "info",
    "load_cache",
    "mat",
    "options",
    "pool",
    "poolx",
    "save_cache",
    "set_options",
    "unpool",
    "unpoolx",
]
