"""Results in the caller's array type, and the caller's current stream.

The caller's library is read from the type of one of its arrays (the "template") by module name;
nothing is imported here: a library that made the template is already in ``sys.modules``.

* CuPy: ``cupy.empty`` on the device, CuPy's current stream.
* PyTorch: ``torch.empty(device="cuda:i")``, ``torch.cuda.current_stream(i)``.
* Numba: ``numba.cuda.device_array`` (legacy default stream).
* JAX: arrays are immutable, so the result is written into a KnetArray and handed to JAX through
  DLPack by ``finalize_result`` once the work is enqueued (legacy default stream).
* KnetArray and anything else: a KnetArray.
"""

from __future__ import annotations

import sys

from . import streams
from .array_view import ArrayView
from .dtypes import dtype_name
from .knet_array import KnetArray
from .views import as_device_view

_LIBRARIES = {"cupy": "cupy", "cupy_backends": "cupy", "torch": "torch", "jax": "jax", "jaxlib": "jax",
              "numba": "numba", "numba_cuda": "numba"}


def library_of(obj) -> str:
    """'knetcnn', 'cupy', 'torch', 'jax', 'numba' or 'other', from the object's type only."""
    if isinstance(obj, KnetArray):
        return "knetcnn"
    return _LIBRARIES.get(type(obj).__module__.split(".")[0], "other")


def _module(name: str):
    module = sys.modules.get(name)
    if module is None:  # cannot happen for a template the library made; say so if it does
        raise RuntimeError(f"knetcnn: the array's library {name!r} is not imported")
    return module


def current_stream(template, device: int) -> int:
    """The stream the caller's library is working on for ``device`` (0: the legacy default stream)."""
    library = library_of(template)
    if library == "cupy":
        cupy = _module("cupy")
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    if library == "torch":
        return int(_module("torch").cuda.current_stream(device).cuda_stream)
    return streams.LEGACY


def _refuse_bfloat16(function: str, library: str) -> None:
    raise TypeError(f"{function}: {library} has no bfloat16 arrays, so a bfloat16 result cannot be returned as one; "
                    "pass PyTorch or JAX arrays (or KnetArrays) for bfloat16")


def allocate_like(template, shape, dtype, device: int, stream=None, function: str = "knetcnn"):
    """A new (uninitialized) result of the template's library, and its ArrayView for ``stream``.

    Returns ``(result, view)``. After enqueuing the work that fills it, call
    ``finalize_result(result, view, stream)`` and return what that returns.
    """
    name = dtype_name(dtype, function)
    shape = tuple(int(s) for s in shape)
    library = library_of(template)
    if library == "cupy":
        if name == "bfloat16":
            _refuse_bfloat16(function, "CuPy")
        cupy = _module("cupy")
        with cupy.cuda.Device(device):
            out = cupy.empty(shape, dtype=name)
    elif library == "torch":
        torch = _module("torch")
        out = torch.empty(shape, dtype=getattr(torch, name), device=f"cuda:{device}")
    elif library == "numba":
        if name == "bfloat16":
            _refuse_bfloat16(function, "Numba")
        cuda = _module("numba.cuda")
        with cuda.gpus[device]:
            out = cuda.device_array(shape, dtype=name)
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
        return _module("jax").dlpack.from_dlpack(result)
    return result
