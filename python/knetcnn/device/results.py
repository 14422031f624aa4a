"""Results in the caller's array type.

* CuPy: ``cupy.empty`` on the device; its view is taken with that device current.
* PyTorch: ``torch.empty(device="cuda:i")``.
* Numba: ``numba.cuda.device_array`` (legacy default stream).
* JAX: arrays are immutable, so the result is written into a KnetArray and handed to JAX through
  DLPack by ``finalize_result`` once the work is enqueued (JAX's import waits for our work).
* KnetArray and anything else: a KnetArray.

For PyTorch and CuPy results, releasing the view (``finalize_result``) makes the library's
current stream on that device wait for our work (see ``libraries.order_library_after``).
"""

from __future__ import annotations

from . import cuda_runtime as rt
from . import streams
from .array_view import ArrayView
from .dtypes import dtype_name
from .knet_array import KnetArray
from .libraries import current_stream, library_of, module
from .views import as_device_view

__all__ = ["allocate_like", "current_stream", "finalize_result", "library_of"]


def _refuse_bfloat16(function: str, library: str) -> None:
    raise TypeError(f"{function}: {library} has no bfloat16 arrays, so a bfloat16 result cannot be returned as one; "
                    "pass PyTorch or JAX arrays (or KnetArrays) for bfloat16")


def allocate_like(template, shape, dtype, device: int, stream=None, function: str = "knetcnn"):
    """A new (uninitialized) result of the template's library, and its ArrayView for ``stream``.

    Returns ``(result, view)``. After enqueuing the work that fills it, call
    ``finalize_result(result, view, stream)`` and return what that returns. The view is taken
    with ``device`` current (DLPack producers record their events on the current device).
    """
    name = dtype_name(dtype, function)
    shape = tuple(int(s) for s in shape)
    with rt.naming(f"{function}: out"):
        out, view = _allocate(library_of(template), shape, name, device, stream, function)
    return out, view


def _allocate(library: str, shape, name: str, device: int, stream, function: str):
    if library == "cupy":
        if name == "bfloat16":
            _refuse_bfloat16(function, "CuPy")
        cupy = module("cupy")
        with cupy.cuda.Device(device):
            out = cupy.empty(shape, dtype=name)
            view = as_device_view(out, function, "out", stream)
    elif library == "torch":
        torch = module("torch")
        out = torch.empty(shape, dtype=getattr(torch, name), device=f"cuda:{device}")
        view = as_device_view(out, function, "out", stream)
    elif library == "numba":
        if name == "bfloat16":
            _refuse_bfloat16(function, "Numba")
        cuda = module("numba.cuda")
        with cuda.gpus[device]:
            out = cuda.device_array(shape, dtype=name)
            view = as_device_view(out, function, "out", stream)
    else:
        out = KnetArray.empty(shape, name, device)
        view = as_device_view(out, function, "out", stream)
    if library == "jax":
        view.deliver_as = "jax"
    return out, view


def finalize_result(result, view: ArrayView, stream=None):
    """Release the result's view (its work is enqueued on ``stream``) and return the result as the
    caller's type: a JAX array for JAX callers, ``result`` itself otherwise."""
    view.release(None if stream is None else streams.as_handle(stream, "finalize_result"))
    if view.deliver_as == "jax":
        return module("jax").dlpack.from_dlpack(result)
    return result
