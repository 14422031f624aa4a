"""Device arrays: KnetArray, foreign CUDA arrays (CUDA Array Interface v3, DLPack), results.

How the dispatcher uses this package, for one call on device arrays::

    kind = device.require_same_kind("conv4", {"w": w, "x": x})      # 'device' or 'host'
    stream = device.current_stream(x, dev)                         # the caller's stream
    wv = device.as_device_view(w, "conv4", "w", stream)            # ArrayView, ordered after
    xv = device.as_device_view(x, "conv4", "x", stream)            #   the producers' work
    out, yv = device.allocate_like(x, shape, xv.dtype, xv.device, stream, function="conv4")
    ... enqueue the cuDNN work on `stream`, reading wv/xv and writing yv ...
    wv.release(stream); xv.release(stream)
    return device.finalize_result(out, yv, stream)                 # the caller's array type

If the call fails before anything is enqueued, release every view taken so far with
``view.release(enqueued=False)``: that drops them at once, with no CUDA call.

``release(stream)`` records a knetcnn-owned event on ``stream``; each input (its owner, a DLPack
deleter) is kept alive until that event completes and let go at a later safe point (any later
entry into this package, a garbage collection on the main thread, :func:`collect`, or exit), so
no library frees or reuses memory our queued work still reads. Only events are kept past a call,
never a caller's stream handle.

Nothing here has run on a GPU yet: everything that needs one is written to the documented
contracts and tested here against a simulated CUDA runtime (tests/python/fake_cuda.py).
"""

from .array_view import ArrayView
from .cuda_runtime import require_device, unavailable_reason
from .knet_array import KnetArray
from .results import allocate_like, current_stream, finalize_result, library_of
from .safepoints import collect
from .views import array_kind, as_device_view, is_device_array, require_same_kind

__all__ = [
    "ArrayView",
    "KnetArray",
    "allocate_like",
    "array_kind",
    "as_device_view",
    "collect",
    "current_stream",
    "finalize_result",
    "is_device_array",
    "library_of",
    "require_device",
    "require_same_kind",
    "unavailable_reason",
]
