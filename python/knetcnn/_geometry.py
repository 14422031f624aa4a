"""Knet geometry for each call: Python type checks (_args) then the C++ core's value rules.

Every backend builds its work from these geometries; the CPU backend reads their shapes and
per-axis values, the cuDNN backend turns them into descriptors.
"""

from __future__ import annotations

import numpy as np

from . import _args
from ._core import core


# Geometries are immutable and take a few microseconds to check and build, a good part of a
# small call; a training loop repeats the same few. They are memoized when every keyword is
# spelled as a plain int, a tuple of ints or None; other spellings (lists, NumPy integers, bools
# that must be refused) take the full path every time. Errors are never memoized.
_MEMO: dict = {}
_MEMO_LIMIT = 512


def _memoized(key, build):
    g = _MEMO.get(key)
    if g is None:
        g = build()
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[key] = g
    return g


def conv(function: str, w_shape, x_shape, *, padding, stride, dilation, mode, group, transposed=False, output_padding=0):
    """conv4-style geometry, or deconv4-style (``transposed``, the only kind with output_padding)."""
    def build():
        return _conv(function, w_shape, x_shape, padding=padding, stride=stride, dilation=dilation, mode=mode,
                     group=group, transposed=transposed, output_padding=output_padding)

    if not _args.plain(w_shape, x_shape, padding, stride, dilation, mode, group, output_padding):
        return build()
    return _memoized((function, w_shape, x_shape, padding, stride, dilation, mode, group, transposed, output_padding), build)


def _conv(function, w_shape, x_shape, *, padding, stride, dilation, mode, group, transposed, output_padding):
    keys = dict(
        padding=_args.axis_arg(function, "padding", padding),
        stride=_args.axis_arg(function, "stride", stride),
        dilation=_args.axis_arg(function, "dilation", dilation),
        mode=_args.int_arg(function, "mode", mode),
        group=_args.int_arg(function, "group", group),
    )
    if not transposed:
        return core.conv4_geometry(function, tuple(w_shape), tuple(x_shape), **keys)
    op = _args.axis_arg(function, "output_padding", output_padding)
    return core.deconv4_geometry(function, tuple(w_shape), tuple(x_shape), output_padding=op, **keys)


def pool(function: str, x_shape, *, window, padding, stride, mode, maxpoolingNanOpt=None, transposed=False):
    """pool geometry, or unpool's (``transposed=True``, which has no maxpoolingNanOpt)."""
    def build():
        return _pool(function, x_shape, window=window, padding=padding, stride=stride, mode=mode,
                     maxpoolingNanOpt=maxpoolingNanOpt, transposed=transposed)

    if not _args.plain(x_shape, window, padding, stride, mode, maxpoolingNanOpt):
        return build()
    return _memoized((function, x_shape, window, padding, stride, mode, maxpoolingNanOpt, transposed), build)


def _pool(function, x_shape, *, window, padding, stride, mode, maxpoolingNanOpt, transposed):
    keys = dict(
        window=_args.axis_arg(function, "window", window),
        padding=_args.axis_arg(function, "padding", padding),
        stride=None if stride is None else _args.axis_arg(function, "stride", stride),
        mode=_args.int_arg(function, "mode", mode),
    )
    if transposed:
        return core.unpool_geometry(function, tuple(x_shape), **keys)
    nan_opt = _args.int_arg(function, "maxpoolingNanOpt", maxpoolingNanOpt)
    return core.pool_geometry(function, tuple(x_shape), nan_opt=nan_opt, **keys)


def check_shape(function: str, argument: str, shape, expected, why: str) -> None:
    shape, expected = tuple(shape), tuple(expected)
    if shape != expected:  # the core builds the message; equal shapes need no call into it
        core.check_shape(function, argument, shape, expected, why)


_FLOAT32_MAX = 3.4028234663852886e38


def alpha(function: str, value, *, nonzero: bool = False, dtype: str = "float64") -> float:
    """alpha as a float. Finite, non-zero where unpool divides by it, and for half, bfloat16 and
    float arrays within float32's range, not rounding to 0 there unless 0 (alpha and unpool's
    1/alpha): cuDNN takes the scalars as
    host floats there, and the CPU backend computes in float32, so a larger value would turn into
    inf on one backend and not the other. Memoized like the geometries (a training loop passes the
    same alpha every call) for ints and floats, per rule set: zero allowed or not, float64 or not."""
    def build():
        return _checked_alpha(function, value, nonzero, dtype)

    if type(value) not in (int, float):
        return build()
    return _memoized(("alpha", value, type(value), nonzero, dtype == "float64"), build)


def _checked_alpha(function, value, nonzero, dtype):
    a = _args.alpha_arg(function, value)
    core.check_alpha(function, a, nonzero)
    if dtype != "float64":
        scalars = (a, 1.0 / a) if nonzero else (a,)
        # A non-zero value that rounds to 0 in float32 is out of range too: inf * alpha would be NaN.
        if any(abs(v) > _FLOAT32_MAX or (v != 0 and np.float32(v) == 0) for v in scalars):
            what = "alpha and 1/alpha" if nonzero else "alpha"
            raise ValueError(f"{function}: alpha={a!r}: for {dtype} arrays {what} must be within float32's range "
                             f"(magnitude <= 3.4028235e38, and >= 1e-45 unless 0): cuDNN takes it as a float")
    return a
