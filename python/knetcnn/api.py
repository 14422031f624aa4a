"""Knet.jl's convolution and pooling family: conv4, deconv4, pool, unpool, mat and gradients.

Every function validates its whole call before any work: array types and dtypes (TypeError, see
``knetcnn._dispatch``), then keyword types (TypeError) and values, sizes and gradient shapes
(ValueError from the C++ core, which owns every size rule). NumPy arrays run on the exact CPU
backend and return NumPy arrays; CUDA device arrays run on cuDNN and return device arrays. Lists,
scalars and other array-likes are refused with a TypeError suggesting ``np.asarray``.

Shapes are C-order ``(N, C, *spatial)`` with 1 to 3 spatial axes. Per-axis keywords (padding,
stride, dilation, window, output_padding) take an int or one int per spatial axis, in the order
of the array's spatial axes. See semantics.md for the full contract.

A host call that repeats an earlier valid call's signature (op, array shapes and dtype, keywords,
alpha) reuses that validation instead of redoing it: see ``knetcnn._plans`` for which calls have one.

Every function but ``mat`` also takes ``stream=``: for device arrays, the CUDA stream to run on (a
handle, or a CuPy / PyTorch / cuda-python stream object) instead of the caller library's current
stream; host (NumPy) calls ignore it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, TypeVar, Union

from . import _args, _dispatch, _geometry, _plans, cpu

Array = TypeVar("Array")
AxisArg = Union[int, Sequence[int]]

__all__ = [
    "conv4", "conv4w", "conv4x",
    "deconv4", "deconv4w", "deconv4x",
    "pool", "poolx", "unpool", "unpoolx",
    "mat",
]  # fmt: skip


# The gradient calls, which take dy (and, for pooling, y). Told by name, not by dy being None: a
# gradient call given None must be refused as one (a TypeError naming dy), not run as a forward.
_GRADIENT_OPS = frozenset({"conv4w", "conv4x", "deconv4w", "deconv4x", "poolx", "unpoolx"})


def _conv_call(op, w, x, dy, *, padding, stride, dilation, mode, alpha, group, output_padding=0, stream=None):
    """Validate and run one convolution-family call; dy is None for the forward ops."""
    gradient = op in _GRADIENT_OPS
    arrays = (w, x, dy) if gradient else (w, x)
    signature = _plans.key(op, arrays, (padding, stride, dilation, mode, group, output_padding), alpha)
    plan = _plans.find(signature)
    if plan is not None:
        return plan(arrays)
    named = dict(w=w, x=x, dy=dy) if gradient else dict(w=w, x=x)
    where = _dispatch.classify(op, **named)
    g = _geometry.conv(
        op, _dispatch.shape_of(w), _dispatch.shape_of(x),
        padding=padding, stride=stride, dilation=dilation, mode=mode, group=group,
        transposed=op.startswith("deconv"), output_padding=output_padding,
    )  # fmt: skip
    a = _geometry.alpha(op, alpha, dtype=_dispatch.dtype_name(x))
    if gradient:
        # conv4's dy is shaped like its output; deconv4's like its result (the geometry's input).
        expected, what = (g.input_shape, "deconv4") if g.transposed else (g.output_shape, "conv4")
        _geometry.check_shape(op, "dy", _dispatch.shape_of(dy), expected, f"the shape of {what}(w, x) with these keywords")
    if signature is not None:  # validated in full: host arrays only
        _plans.remember(signature, cpu.planned(op, g, a, x.dtype))
    return _dispatch.run(where, op, arrays, g, a, stream)


def _pool_call(op, x, y, dy, *, window, padding, stride, mode, alpha, maxpoolingNanOpt=None, stream=None):
    """Validate and run one pooling-family call; y and dy are None for the forward ops."""
    gradient = op in _GRADIENT_OPS
    arrays = (x, y, dy) if gradient else (x,)
    signature = _plans.key(op, arrays, (window, padding, stride, mode, maxpoolingNanOpt), alpha)
    plan = _plans.find(signature)
    if plan is not None:
        return plan(arrays)
    unpooling = op.startswith("unpool")
    named = dict(x=x, y=y, dy=dy) if gradient else dict(x=x)
    where = _dispatch.classify(op, **named)
    g = _geometry.pool(
        op, _dispatch.shape_of(x), window=window, padding=padding, stride=stride, mode=mode,
        maxpoolingNanOpt=maxpoolingNanOpt, transposed=unpooling,
    )  # fmt: skip
    a = _geometry.alpha(op, alpha, nonzero=unpooling, dtype=_dispatch.dtype_name(x))
    if gradient:
        # pool's y is its output; unpool's y is its result (the transposed geometry's input).
        expected, what = (g.input_shape, "unpool") if unpooling else (g.output_shape, "pool")
        for name, arr in (("y", y), ("dy", dy)):
            _geometry.check_shape(op, name, _dispatch.shape_of(arr), expected, f"the shape of {what}(x) with these keywords")
    if signature is not None:  # validated in full: host arrays only
        _plans.remember(signature, cpu.planned(op, g, a, x.dtype))
    return _dispatch.run(where, op, arrays, g, a, stream)


def conv4(w: Array, x: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
          mode: int = 0, alpha: float = 1, group: int = 1, stream=None) -> Array:  # fmt: skip
    """Convolution of x with filters w (Knet's ``conv4``).

    ``y[n, o, yo] = alpha * sum_c sum_j w'[o, c, j] * x[n, g*Cg + c, yo*stride - padding + j*dilation]``
    with x zero outside its bounds, ``Cg = C // group``, ``g = o // (O // group)``; ``w'`` is w
    flipped on every spatial axis for ``mode=0`` (true convolution, Knet's default) and w itself
    for ``mode=1`` (cross-correlation, PyTorch's ``conv2d``).

    Shapes: w ``(O, C // group, *K)``, x ``(N, C, *X)`` -> y ``(N, O, *Y)`` with
    ``Y = 1 + (X + 2*padding - ((K-1)*dilation + 1)) // stride``.

    >>> w = np.array([[[1., 2., 3.]]]); x = np.arange(1., 8.).reshape(1, 1, 7)
    >>> conv4(w, x)
    array([[[10., 16., 22., 28., 34.]]])
    """
    return _conv_call("conv4", w, x, None, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, stream=stream)  # fmt: skip


def conv4w(w: Array, x: Array, dy: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
           mode: int = 0, alpha: float = 1, group: int = 1, stream=None) -> Array:  # fmt: skip
    """Gradient of conv4 with respect to w: dL/dw for ``L = <dy, conv4(w, x, **same)>``.

    Shape of w, in w's stored orientation (so mode 0 gives the flip of mode 1); includes alpha.
    dy must have conv4(w, x)'s shape (ValueError otherwise).

    >>> w = np.ones((1, 1, 2, 2)); x = np.arange(9.).reshape(1, 1, 3, 3)
    >>> conv4w(w, x, np.ones((1, 1, 2, 2)), mode=1)
    array([[[[ 8., 12.],
             [20., 24.]]]])
    """
    return _conv_call("conv4w", w, x, dy, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, stream=stream)  # fmt: skip


def conv4x(w: Array, x: Array, dy: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
           mode: int = 0, alpha: float = 1, group: int = 1, stream=None) -> Array:  # fmt: skip
    """Gradient of conv4 with respect to x: dL/dx for ``L = <dy, conv4(w, x, **same)>``.

    Shape of x (x is read only for its shape); includes alpha. dy must have conv4(w, x)'s shape.

    >>> w = np.ones((1, 1, 2, 2)); x = np.zeros((1, 1, 3, 3))
    >>> conv4x(w, x, np.ones((1, 1, 2, 2)))
    array([[[[1., 2., 1.],
             [2., 4., 2.],
             [1., 2., 1.]]]])
    """
    return _conv_call("conv4x", w, x, dy, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, stream=stream)  # fmt: skip


def deconv4(w: Array, x: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
            mode: int = 0, alpha: float = 1, group: int = 1, output_padding: AxisArg = 0, stream=None) -> Array:  # fmt: skip
    """Transposed convolution (Knet's ``deconv4``): ``deconv4(w, x) == conv4x(w, y0, x)``.

    ``y0`` is a zero array of the result's shape: each x value scatters ``alpha * x * w'`` into
    the result (cuDNN backward-data). Shapes: w ``(C_in, C_out // group, *K)`` (PyTorch's
    ``conv_transpose`` layout), x ``(N, C_in, *X)`` -> ``(N, C_out, *Y)`` with
    ``Y = stride*(X-1) + (K-1)*dilation + 1 - 2*padding + output_padding``. ``output_padding``
    (``0 <= output_padding < max(stride, dilation)``) picks a larger result; its extra cells get
    whatever the scatter puts there (zeros if nothing).

    The identities with conv4x here and with conv4w and conv4 in deconv4w and deconv4x hold for
    ``output_padding < stride``. A larger output_padding (allowed where dilation > stride) gives a
    result that conv4 maps back onto more than X cells: deconv4w and deconv4x are still the exact
    gradients (the adjoints of deconv4), but no longer those conv4 calls.

    >>> deconv4(np.ones((1, 1, 2)), np.array([[[1., 2.]]]), stride=2)
    array([[[1., 1., 2., 2.]]])
    """
    return _conv_call("deconv4", w, x, None, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, output_padding=output_padding, stream=stream)  # fmt: skip


def deconv4w(w: Array, x: Array, dy: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
             mode: int = 0, alpha: float = 1, group: int = 1, output_padding: AxisArg = 0, stream=None) -> Array:  # fmt: skip
    """Gradient of deconv4 with respect to w: ``deconv4w(w, x, dy) == conv4w(w, dy, x)``.

    Shape of w; dy must have deconv4(w, x)'s shape. The identity needs ``output_padding < stride``
    (see deconv4); the gradient is exact for every output_padding.

    >>> deconv4w(np.ones((1, 1, 2)), np.array([[[1., 2.]]]), np.ones((1, 1, 3)))
    array([[[3., 3.]]])
    """
    return _conv_call("deconv4w", w, x, dy, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, output_padding=output_padding, stream=stream)  # fmt: skip


def deconv4x(w: Array, x: Array, dy: Array, *, padding: AxisArg = 0, stride: AxisArg = 1, dilation: AxisArg = 1,
             mode: int = 0, alpha: float = 1, group: int = 1, output_padding: AxisArg = 0, stream=None) -> Array:  # fmt: skip
    """Gradient of deconv4 with respect to x: ``deconv4x(w, x, dy) == conv4(w, dy)``.

    Shape of x (read only for its shape); dy must have deconv4(w, x)'s shape. The identity needs
    ``output_padding < stride`` (see deconv4); the gradient is exact for every output_padding.

    >>> deconv4x(np.ones((1, 1, 2)), np.zeros((1, 1, 2)), np.array([[[1., 2., 3.]]]))
    array([[[3., 5.]]])
    """
    return _conv_call("deconv4x", w, x, dy, padding=padding, stride=stride, dilation=dilation, mode=mode,
                      alpha=alpha, group=group, output_padding=output_padding, stream=stream)  # fmt: skip


def pool(x: Array, *, window: AxisArg = 2, padding: AxisArg = 0, stride: Optional[AxisArg] = None,
         mode: int = 0, maxpoolingNanOpt: int = 1, alpha: float = 1, stream=None) -> Array:  # fmt: skip
    """Pooling (Knet's ``pool``): ``alpha * pooled`` over windows ``i = yo*stride - padding + j``.

    ``mode``: 0 max over in-bounds cells (padding never counts), 1 average with padding counted
    (``sum / prod(window)``), 2 average over in-bounds cells only, 3 max (deterministic backward on
    a GPU). ``stride`` defaults to ``window``. ``maxpoolingNanOpt=1``: a window containing NaN
    gives NaN; ``0``: NaNs are skipped and an all-NaN window gives ``-finfo(dtype).max``.

    Shapes: x ``(N, C, *X)`` -> ``(N, C, *Y)``, ``Y = 1 + (X + 2*padding - window) // stride``;
    requires ``padding < window <= X + 2*padding``.

    >>> pool(np.array([[[1., 2., 3., 4., 5., 6.]]]))
    array([[[2., 4., 6.]]])
    """
    return _pool_call("pool", x, None, None, window=window, padding=padding, stride=stride, mode=mode,
                      alpha=alpha, maxpoolingNanOpt=maxpoolingNanOpt, stream=stream)  # fmt: skip


def poolx(x: Array, y: Array, dy: Array, *, window: AxisArg = 2, padding: AxisArg = 0,
          stride: Optional[AxisArg] = None, mode: int = 0, maxpoolingNanOpt: int = 1, alpha: float = 1, stream=None) -> Array:  # fmt: skip
    """Gradient of pool: dL/dx for ``L = <dy, pool(x, **same)>``; y is that pool's output.

    Max modes: each window's ``alpha * dy`` goes to one cell, the first in-bounds cell in
    row-major order (within the window) holding the window's maximum, recomputed from x; windows
    that overlap add. A window containing NaN (``maxpoolingNanOpt=1``) routes to its first NaN
    cell; an all-NaN window under ``maxpoolingNanOpt=0`` routes nowhere (its output is the
    constant ``-finfo.max``). Average modes: every in-bounds cell gets ``alpha * dy / divisor``.
    y and dy must have pool(x)'s shape; y is checked but not read.

    >>> x = np.array([[[1., 3., 2., 2.]]]); y = pool(x)
    >>> poolx(x, y, np.ones_like(y))
    array([[[0., 1., 1., 0.]]])
    """
    return _pool_call("poolx", x, y, dy, window=window, padding=padding, stride=stride, mode=mode,
                      alpha=alpha, maxpoolingNanOpt=maxpoolingNanOpt, stream=stream)  # fmt: skip


def unpool(x: Array, *, window: AxisArg = 2, padding: AxisArg = 0, stride: Optional[AxisArg] = None,
           mode: int = 0, alpha: float = 1, stream=None) -> Array:  # fmt: skip
    """Knet's ``unpool``: the average-pool backward of ``x * prod(window)``, scaled by ``1/alpha``.

    The average mode is Knet's mapping of ``mode``: 0->1, 1->2, 2->1, 3->1. For windows that do not
    overlap it is nearest-neighbour upsampling, and ``pool(unpool(x, **k), **k) == x`` for every
    mode. Shapes: x ``(N, C, *X)`` -> ``(N, C, *Y)``, ``Y = stride*(X-1) + window - 2*padding``.
    alpha must be non-zero.

    >>> unpool(np.array([[[1., 2.]]]))
    array([[[1., 1., 2., 2.]]])
    """
    return _pool_call("unpool", x, None, None, window=window, padding=padding, stride=stride, mode=mode,
                      alpha=alpha, stream=stream)  # fmt: skip


def unpoolx(x: Array, y: Array, dy: Array, *, window: AxisArg = 2, padding: AxisArg = 0,
            stride: Optional[AxisArg] = None, mode: int = 0, alpha: float = 1, stream=None) -> Array:  # fmt: skip
    """Gradient of unpool: ``prod(window) * pool(dy, mode=mapped, alpha=1/alpha, **same)``.

    Shape of x; y (unpool's output) and dy must have unpool(x)'s shape; y is checked, not read.

    >>> x = np.array([[[1., 2.]]]); y = unpool(x)
    >>> unpoolx(x, y, np.array([[[1., 2., 3., 4.]]]))
    array([[[3., 7.]]])
    """
    return _pool_call("unpoolx", x, y, dy, window=window, padding=padding, stride=stride, mode=mode,
                      alpha=alpha, stream=stream)  # fmt: skip


def mat(x: Array, dims: Optional[int] = None) -> Array:
    """``x.reshape(prod(x.shape[:x.ndim-dims]), prod(x.shape[x.ndim-dims:]))``: Knet's ``mat``.

    ``dims`` (default ``x.ndim - 1``, ``0 <= dims <= x.ndim``) trailing axes become columns: for
    ``(N, C, H, W)`` the default gives the ``(N, C*H*W)`` matrix a fully connected layer takes. A
    view when the layout allows (the array library's own ``reshape``); works on NumPy and device
    arrays alike, of any dtype.

    >>> mat(np.zeros((2, 3, 4, 5))).shape
    (2, 60)
    """
    _dispatch.placement("mat", "x", x)  # any dtype: mat only changes the shape
    shape = _dispatch.shape_of(x)
    ndim = len(shape)
    if dims is None and ndim == 0:
        raise ValueError("mat: dims=None: the default dims, x.ndim - 1, is -1 for x of shape (); pass dims=0 for a "
                         "1 x 1 matrix")
    dims = ndim - 1 if dims is None else _args.int_arg("mat", "dims", dims)
    if not 0 <= dims <= ndim:
        raise ValueError(f"mat: dims={dims}: dims must be in 0..x.ndim = 0..{ndim} (x has shape {shape})")
    split = ndim - dims
    return x.reshape(math.prod(shape[:split]), math.prod(shape[split:]))
