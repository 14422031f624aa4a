"""Device arrays: the hand-off to the cuDNN backend.

`_device_backend_call(op, arrays, geometry, alpha)` receives a call that knetcnn's public API has
already validated: `arrays` in the op's argument order (all device arrays, one dtype), `geometry`
the core's ConvGeometry / PoolGeometry, `alpha` a finite float. Placeholder until the cuDNN
backend is wired in: it says why no GPU is usable, or that the path is not wired yet.
"""

from __future__ import annotations

from ._core import core
from ._errors import DeviceUnavailableError


def _device_backend_call(op: str, arrays: tuple, geometry, alpha: float):
    reason = core.device_unavailable_reason(0)
    if reason:
        raise DeviceUnavailableError(f"{op}: device arrays need a usable GPU, and there is none: {reason}")
    raise NotImplementedError("device arrays: not yet wired")
