"""``knetcnn.describe``: the cuDNN descriptors a call would be given, read back from cuDNN.

These are host-only cuDNN calls, so this works without a GPU: it shows exactly how Knet's
keywords map onto cuDNN (the 1-D lift, the padding order, compute and math types).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _geometry
from ._core import core

_CONV_OPS = {"conv4", "conv4w", "conv4x", "deconv4", "deconv4w", "deconv4x"}
_POOL_OPS = {"pool", "poolx", "unpool", "unpoolx"}


def _shape_of(a) -> tuple[int, ...]:
    return tuple(int(s) for s in (a.shape if hasattr(a, "shape") else a))


def _dtype_name(arrays, dtype) -> str:
    if dtype is not None:
        return str(dtype) if isinstance(dtype, str) else np.dtype(dtype).name
    for a in arrays:
        if hasattr(a, "dtype"):
            return str(getattr(a.dtype, "name", a.dtype)).replace("torch.", "")
    return "float32"


def describe(op: str, *arrays, dtype=None, allow_tf32: bool = False, **keywords) -> dict[str, Any]:
    """Build the descriptors that ``op(*arrays, **keywords)`` hands cuDNN and read them back.

    ``arrays`` are the op's array arguments (arrays or plain shapes) in its own order, e.g.
    ``describe("conv4", w, x, padding=1)``. Returns a dict with the geometry and, for each
    descriptor, the fields cuDNN holds (dims, strides, padding, mode, compute and math types)
    plus cuDNN's own forward output dims for the input/filter pair.

    >>> d = knetcnn.describe("conv4", (8, 3, 5, 5), (2, 3, 32, 32), padding=(1, 2))
    >>> d["convolution"]["padding"]
    [1, 2]
    """
    if op not in _CONV_OPS | _POOL_OPS:
        raise ValueError(f"describe: op={op!r}: op must be one of {sorted(_CONV_OPS | _POOL_OPS)}")
    name = _dtype_name(arrays, dtype)
    if op in _CONV_OPS:
        if len(arrays) < 2:
            raise TypeError(f"describe: {op} needs w and x (arrays or shapes), got {len(arrays)} argument(s)")
        transposed = op.startswith("deconv")  # only deconv ops take output_padding
        g = _geometry.conv(
            op,
            _shape_of(arrays[0]),
            _shape_of(arrays[1]),
            padding=keywords.pop("padding", 0),
            stride=keywords.pop("stride", 1),
            dilation=keywords.pop("dilation", 1),
            mode=keywords.pop("mode", 0),
            group=keywords.pop("group", 1),
            transposed=transposed,
            output_padding=keywords.pop("output_padding", 0) if transposed else 0,
        )
        keywords.pop("alpha", None)
        _no_extra(op, keywords)
        out = dict(core.describe_conv(g, name, bool(allow_tf32)))
    else:
        if len(arrays) < 1:
            raise TypeError(f"describe: {op} needs x (an array or shape)")
        window = keywords.pop("window", 2)
        transposed = op.startswith("unpool")
        g = _geometry.pool(
            op,
            _shape_of(arrays[0]),
            window=window,
            padding=keywords.pop("padding", 0),
            stride=keywords.pop("stride", None),
            mode=keywords.pop("mode", 0),
            maxpoolingNanOpt=None if transposed else keywords.pop("maxpoolingNanOpt", 1),
            transposed=transposed,
        )
        keywords.pop("alpha", None)
        _no_extra(op, keywords)
        out = dict(core.describe_pool(g, name))
    out["op"] = op
    out["dtype"] = name
    out["geometry"] = {
        attr: getattr(g, attr)
        for attr in dir(g)
        if not attr.startswith("_")
    }
    return out


def _no_extra(op: str, keywords: dict) -> None:
    if keywords:
        raise TypeError(f"describe: {op} got unexpected keyword(s) {sorted(keywords)}")
