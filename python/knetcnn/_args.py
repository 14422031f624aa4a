"""Type checks of keyword values, done before the C++ core checks their ranges.

Each function names the calling function and the argument in its TypeError. Accepted: Python
ints and NumPy integers (anything with ``__index__``), never bools, floats or None; per-axis
keywords also take a tuple, list or 1-D integer array of them (not a dict or set, whose order of
iteration says nothing of the axes). Ints past 64 bits are a ValueError here, as the core could
not take them.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Mapping, Set
from typing import Sequence, Union

AxisValue = Union[int, Sequence[int]]


def _as_int(function: str, name: str, value, whole) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(
            f"{function}: {name}={whole!r}: {name} must be an int"
            + (" or a sequence of ints, one per spatial axis" if name in _PER_AXIS else "")
            + f", not {type(value).__name__}"
        )
    return _in_int64(function, name, operator.index(value), whole)


# The core takes 64-bit ints and states each keyword's own range; a Python int past 64 bits could
# not even reach it (pybind11 would refuse the call with a list of signatures).
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _in_int64(function: str, name: str, value: int, whole) -> int:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(
            f"{function}: {name}={whole!r}: {name} is out of range: it does not fit in 64 bits, and every "
            f"valid {name} lies within 0..2147483647 (see help(knetcnn.{function}))"
        )
    return value


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
        return _in_int64(function, name, operator.index(value), value)
    if (
        isinstance(value, (str, bytes, Mapping, Set))  # keys or an unordered collection: no axis order
        or not hasattr(value, "__iter__")
        or getattr(value, "ndim", 1) != 1
    ):
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
    try:
        return float(value)
    except OverflowError:  # an int (or Fraction) past float's range, e.g. 2**1100
        shown = repr(value)
        if len(shown) > 40:
            shown = f"{shown[:12]}...(about 10**{len(str(abs(int(value)))) - 1})"
        raise ValueError(f"{function}: alpha={shown}: alpha must be a finite number") from None
