"""Knet geometry for each call: Python type checks (_args) then the C++ core's value rules.

Every backend builds its work from these geometries; the CPU backend reads their shapes and
per-axis values, the cuDNN backend turns them into descriptors.
"""

from __future__ import annotations

from . import _args
from ._core import core


def conv(function: str, w_shape, x_shape, *, padding, stride, dilation, mode, group, output_padding=None):
    """conv4-style geometry (``output_padding is None``) or deconv4-style (transposed)."""
    keys = dict(
        padding=_args.axis_arg(function, "padding", padding),
        stride=_args.axis_arg(function, "stride", stride),
        dilation=_args.axis_arg(function, "dilation", dilation),
        mode=_args.int_arg(function, "mode", mode),
        group=_args.int_arg(function, "group", group),
    )
    if output_padding is None:
        return core.conv4_geometry(function, tuple(w_shape), tuple(x_shape), **keys)
    op = _args.axis_arg(function, "output_padding", output_padding)
    return core.deconv4_geometry(function, tuple(w_shape), tuple(x_shape), output_padding=op, **keys)


def pool(function: str, x_shape, *, window, padding, stride, mode, maxpoolingNanOpt=None, transposed=False):
    """pool geometry, or unpool's (``transposed=True``, which has no maxpoolingNanOpt)."""
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
    core.check_shape(function, argument, tuple(shape), tuple(expected), why)


def alpha(function: str, value, *, nonzero: bool = False) -> float:
    a = _args.alpha_arg(function, value)
    core.check_alpha(function, a, nonzero)
    return a
