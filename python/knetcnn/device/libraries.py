"""Which library made an array, and that library's current stream.

The library is read from the array's type and its base classes by module name (so subclasses of
``torch.Tensor`` or ``cupy.ndarray`` count); nothing is imported here: a library that made an
array is already in ``sys.modules``.
"""

from __future__ import annotations

import sys

from . import streams
from .knet_array import KnetArray

_LIBRARIES = {"cupy": "cupy", "cupy_backends": "cupy", "torch": "torch", "jax": "jax", "jaxlib": "jax",
              "numba": "numba", "numba_cuda": "numba"}


def library_of(obj) -> str:
    """'knetcnn', 'cupy', 'torch', 'jax', 'numba' or 'other', from the object's class hierarchy."""
    if isinstance(obj, KnetArray):
        return "knetcnn"
    for klass in type(obj).__mro__:
        library = _LIBRARIES.get((getattr(klass, "__module__", None) or "").split(".")[0])
        if library is not None:
            return library
    return "other"


def module(name: str):
    found = sys.modules.get(name)
    if found is None:  # cannot happen for an array the library made; say so if it does
        raise RuntimeError(f"knetcnn: the array's library {name!r} is not imported")
    return found


def current_stream(template, device: int) -> int:
    """The stream the caller's library is working on for ``device`` (0: the legacy default stream)."""
    library = library_of(template)
    if library == "cupy":
        cupy = module("cupy")
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    if library == "torch":
        return int(module("torch").cuda.current_stream(device).cuda_stream)
    return streams.LEGACY


def order_library_after(view, obj) -> None:
    """On release, make the current stream of ``obj``'s library (PyTorch, CuPy) on the view's
    device wait for our work, so that the library's next use of the array (a read of our result,
    an in-place write to our input) comes after it even when we ran on another stream."""
    if library_of(obj) not in ("torch", "cupy"):
        return

    def hook(used: int, event) -> None:
        library_stream = current_stream(obj, view.device)
        if not streams.same(library_stream, used):
            event.wait_on(library_stream)

    view._on_release.append(hook)
