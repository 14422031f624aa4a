"""Host calls remembered by signature: validate once, then go straight to the CPU backend.

A training loop makes the same calls every step: same op, array shapes, dtype, keywords and
alpha. The first call of such a signature takes the full path (api.py: classify the arrays, build
and check the geometry, check alpha and the gradient shapes) and, if all of that passes, leaves a
plan here: the CPU backend's runner for that op, geometry and alpha (cpu.planned). Later calls
with the same signature find it with one dictionary lookup.

That matters for small calls. Right after a kernel has streamed its arrays through the cache,
the full path's Python costs 2-3 times what it costs warm: 20 of a LeNet-sized poolx's 45 us.

A signature stands for a whole validation only when it fixes every input of it, so only these
calls have one: every array a plain ``numpy.ndarray`` (not a subclass) of one float16, float32 or
float64 dtype in native byte order, every keyword a plain int, ``None`` or tuple of ints (a NumPy
integer or a bool equals an int but may be refused), and alpha an int or a float (its type is
part of the key: ``1 == 1.0``). Failed calls leave nothing, so a bad call raises every time.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from . import _args

_HOST_DTYPES = frozenset(np.dtype(d) for d in ("float16", "float32", "float64"))

_PLANS: dict[tuple, Callable[[tuple], np.ndarray]] = {}
_PLANS_LIMIT = 512  # a few signatures per layer; forgotten all at once past this (like the geometry memo)


def key(op: str, arrays: tuple, keywords: tuple, alpha) -> Optional[tuple]:
    """The call's signature, or None if the call has none (it then always takes the full path)."""
    for a in arrays:
        if type(a) is not np.ndarray:
            return None
    dtype = arrays[0].dtype
    if dtype not in _HOST_DTYPES:
        return None
    for a in arrays[1:]:
        if a.dtype != dtype:
            return None
    if type(alpha) not in (int, float) or not _args.plain(*keywords):
        return None
    return (op, dtype, tuple(a.shape for a in arrays), keywords, alpha, type(alpha))


def find(signature: Optional[tuple]) -> Optional[Callable[[tuple], np.ndarray]]:
    return None if signature is None else _PLANS.get(signature)


def remember(signature: Optional[tuple], plan: Callable[[tuple], np.ndarray]) -> None:
    """Keep `plan` for calls of this signature; call only after the call validated in full."""
    if signature is None:
        return
    if len(_PLANS) >= _PLANS_LIMIT:
        _PLANS.clear()
    _PLANS[signature] = plan


def forget() -> None:
    """Drop every plan (tests; the plans hold nothing a caller could change)."""
    _PLANS.clear()
