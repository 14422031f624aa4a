"""Device arrays: one validated call run on cuDNN through the C++ execution core.

The public API has already checked the call (array kinds, one dtype, keywords, shapes) and built
its geometry. Here the arrays become ArrayViews (pointer, element strides, device) ordered after
their producers' work, the result is allocated in the caller's library, the core enqueues the
cuDNN work on one stream, and the views are released (their producers ordered after our work).

Nothing here has run on a GPU yet (this project's machines have none); the GPU tier of the test
suite exercises it where one exists.
"""

from __future__ import annotations

import contextlib

from . import device
from .device import cuda_runtime as _runtime
from ._core import core

# For each op: the array arguments the core reads, in the core's pointer order, the name of the
# result, and the geometry field holding the result's shape (geometries are in cuDNN forward
# terms: for deconv4/unpool `input_shape` is the op's result, `output_shape` its x).
_PLAN = {
    "conv4": (("w", "x"), "y", "output_shape"),
    "conv4x": (("w", "dy"), "dx", "input_shape"),
    "conv4w": (("x", "dy"), "dw", "filter_shape"),
    "deconv4": (("w", "x"), "y", "input_shape"),
    "deconv4w": (("x", "dy"), "dw", "filter_shape"),
    "deconv4x": (("w", "dy"), "dx", "output_shape"),
    "pool": (("x",), "y", "output_shape"),
    "poolx": (("x", "y", "dy"), "dx", "input_shape"),
    "unpool": (("x",), "y", "input_shape"),
    "unpoolx": (("dy",), "dx", "output_shape"),
}
_CONV_ARGS = ("w", "x", "dy")
_POOL_ARGS = ("x", "y", "dy")


def _named(op: str, arrays: tuple) -> dict:
    names = _POOL_ARGS if op.startswith(("pool", "unpool")) else _CONV_ARGS
    return dict(zip(names, arrays))


def _template(named: dict):
    """The array whose library the result is returned in: the data array, x (or dy)."""
    return named.get("x", named.get("dy"))


def _device_of(obj, op: str) -> int:
    """The CUDA device holding ``obj``, without importing it (no DLPack capsule is taken)."""
    if isinstance(obj, device.KnetArray):
        return obj.device
    if hasattr(obj, "__dlpack_device__"):
        return int(obj.__dlpack_device__()[1])
    view = device.as_device_view(obj, op, "x", stream=None)  # CUDA Array Interface: ask the pointer
    view.release(enqueued=False)
    return view.device


def _device_backend_call(op: str, arrays: tuple, geometry, alpha: float, stream=None):
    """Run ``op`` on cuDNN; returns the result as the caller's array type.

    ``stream``: None for the caller library's current stream (CuPy, PyTorch; the legacy default
    stream otherwise), or an explicit stream (handle, CuPy/PyTorch stream object).
    """
    _runtime.require_device(0, op)  # any usable GPU at all; says why not before touching the arrays
    named = _named(op, arrays)
    reads, result_name, result_field = _PLAN[op]
    template = _template(named)
    dev = _device_of(template, op)
    work_stream = device.current_stream(template, dev) if stream is None else stream
    views = {}
    out_view = None
    try:
        for name in reads:
            views[name] = device.as_device_view(named[name], op, name, work_stream)
        devices = {n: v.device for n, v in views.items()}
        if len(set(devices.values()) | {dev}) > 1:
            listed = ", ".join(f"{n} is on device {d}" for n, d in devices.items())
            raise TypeError(f"{op}: {listed}: all arrays of one call must be on the same GPU")
        dtype = next(iter(views.values())).dtype
        shape = getattr(geometry, result_field)
        out, out_view = device.allocate_like(template, shape, dtype, dev, work_stream, function=op)
        strides = {f"{n}_strides": v.strides for n, v in views.items()}
        strides[f"{result_name}_strides"] = out_view.strides
        getattr(core, f"exec_{op}")(geometry, dtype, *(views[n].ptr for n in reads), out_view.ptr, alpha=alpha,
                                    device=dev, stream=out_view.consumer_stream, **strides)
    except BaseException:
        # Some work may have been enqueued before the failure: release as if it had been (the
        # inputs stay alive until the stream passes this point), never masking the real error.
        for v in (*views.values(), out_view):
            if v is not None:
                with contextlib.suppress(Exception):  # release() still lets go; report the real error
                    v.release(work_stream)
        raise
    for v in views.values():
        v.release(work_stream)
    return device.finalize_result(out, out_view, work_stream)
