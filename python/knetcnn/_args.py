"""Type checks of keyword values, done before the C++ core checks their ranges.

Each function names the calling function and the argument in its TypeError. Accepted: Python
ints and NumPy integers (anything with ``__index__``), never bools, floats or None; per-axis
keywords also take a tuple, list or 1-D integer array of them.
"""

from __future__ import annotations

import numbers
import operator
from typing import Sequence, Union

AxisValue = Union[int, Sequence[int]]


def _as_int(function: str, name: str, value, whole) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(
            f"{function}: {name}={whole!r}: {name} must be an int"
            + (" or a sequence of ints, one per spatial axis" if name in _PER_AXIS else "")
            + f", not {type(value).__name__}"
        )
    return operator.index(value)


_PER_AXIS = {"padding", "stride", "dilation", "window", "output_padding"}


def plain(*values) -> bool:
    """Whether every value is a Python int, None or a tuple of Python ints: spellings whose
    equality and hash say all there is to know of them, so they may key a memo. Others may compare
    equal and still differ (a NumPy integer, a bool, which is refused, a list, which is unhashable)."""
    for v in values:
        t = type(v)
        if not (t is int or v is None or (t is tuple and all(type(i) is int for i in v))):
            return False
    return True


def axis_arg(function: str, name: str, value) -> int | tuple[int, ...]:
    """An int for every spatial axis, or a sequence of ints (one per axis), as ints."""
    if hasattr(type(value), "__index__") and not isinstance(value, bool) and getattr(value, "ndim", 0) == 0:
        return operator.index(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or getattr(value, "ndim", 1) != 1:
        raise TypeError(
            f"{function}: {name}={value!r}: {name} must be an int or a sequence of ints, "
            f"one per spatial axis, not {type(value).__name__}"
        )
    items = tuple(_as_int(function, name, v, value) for v in value)
    if not items:
        raise TypeError(f"{function}: {name}={value!r}: {name} must not be an empty sequence")
    return items


def int_arg(function: str, name: str, value) -> int:
    return _as_int(function, name, value, value)


def alpha_arg(function: str, value) -> float:
    """alpha as a Python float: real numbers only (no bools, complex numbers or strings)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{function}: alpha={value!r}: alpha must be a real number, not {type(value).__name__}")
    return float(value)
