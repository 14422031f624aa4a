"""A slow, obviously correct oracle: every op written straight from semantics.md with scalar loops.

Works in float64 on whatever values it is given. Each convolution and pooling function also
returns, when asked (`magnitude=True`), the sum of |terms| behind every output element, which the
tests use to bound rounding error. Shapes must stay tiny.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def per_axis(value, d):
    return (int(value),) * d if np.ndim(value) == 0 else tuple(int(v) for v in value)


def positions(shape):
    return itertools.product(*(range(n) for n in shape))


def in_bounds(index, sizes):
    return all(0 <= i < n for i, n in zip(index, sizes))


def flipped(w, mode):
    """w' of semantics.md §3: w flipped on every spatial axis for mode 0, w for mode 1."""
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * (w.ndim - 2)] if mode == 0 else w


def conv_size(x, k, p, s, dil):
    return 1 + (x + 2 * p - ((k - 1) * dil + 1)) // s


def deconv_size(x, k, p, s, dil, op):
    return s * (x - 1) + (k - 1) * dil + 1 - 2 * p + op


def _conv_terms(w_shape, x_spatial, y_spatial, group, padding, stride, dilation):
    """Every (o, c_in_group, g, j, yo, i) with i = yo*s - p + j*dil inside x: the formula's terms."""
    O, Cg = w_shape[:2]
    Og = O // group
    K = w_shape[2:]
    for o in range(O):
        g = o // Og
        for c in range(Cg):
            for j in positions(K):
                for yo in positions(y_spatial):
                    i = tuple(yo[a] * stride[a] - padding[a] + j[a] * dilation[a] for a in range(len(K)))
                    if in_bounds(i, x_spatial):
                        yield o, c, g * Cg + c, j, yo, i


def _keys(ndim, padding, stride, dilation):
    d = ndim - 2
    return per_axis(padding, d), per_axis(stride, d), per_axis(dilation, d)


def conv4(w, x, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1, out_spatial=None, magnitude=False):
    """y[n,o,yo] = alpha * sum_c sum_j w'[o,c,j] x[n, g*Cg+c, yo*s - p + j*dil]."""
    w, x = np.asarray(w, np.float64), np.asarray(x, np.float64)
    p, s, dil = _keys(x.ndim, padding, stride, dilation)
    if out_spatial is None:
        out_spatial = tuple(conv_size(xs, k, pa, st, di) for xs, k, pa, st, di in zip(x.shape[2:], w.shape[2:], p, s, dil))
    wf = flipped(w, mode)
    y = np.zeros((x.shape[0], w.shape[0]) + tuple(out_spatial))
    mag = np.zeros_like(y)
    for o, c, ch, j, yo, i in _conv_terms(w.shape, x.shape[2:], out_spatial, group, p, s, dil):
        for n in range(x.shape[0]):
            term = alpha * wf[(o, c) + j] * x[(n, ch) + i]
            y[(n, o) + yo] += term
            mag[(n, o) + yo] += abs(term)
    return (y, mag) if magnitude else y


def conv4x(w, x, dy, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1, magnitude=False):
    """dx[n, ch, i] = sum of alpha * w'[o,c,j] * dy[n,o,yo] over the terms that read x[n, ch, i]."""
    w, dy = np.asarray(w, np.float64), np.asarray(dy, np.float64)
    p, s, dil = _keys(dy.ndim, padding, stride, dilation)
    wf = flipped(w, mode)
    dx = np.zeros(np.shape(x))
    mag = np.zeros_like(dx)
    for o, c, ch, j, yo, i in _conv_terms(w.shape, dx.shape[2:], dy.shape[2:], group, p, s, dil):
        for n in range(dx.shape[0]):
            term = alpha * wf[(o, c) + j] * dy[(n, o) + yo]
            dx[(n, ch) + i] += term
            mag[(n, ch) + i] += abs(term)
    return (dx, mag) if magnitude else dx


def conv4w(w, x, dy, padding=0, stride=1, dilation=1, mode=0, alpha=1, group=1, magnitude=False):
    """dw'[o,c,j] = sum over n, yo of alpha * dy[n,o,yo] * x[n, ch, i]; returned in w's orientation."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    p, s, dil = _keys(x.ndim, padding, stride, dilation)
    w_shape = np.shape(w)
    dwf = np.zeros(w_shape)
    mag = np.zeros_like(dwf)
    for o, c, ch, j, yo, i in _conv_terms(w_shape, x.shape[2:], dy.shape[2:], group, p, s, dil):
        for n in range(x.shape[0]):
            term = alpha * dy[(n, o) + yo] * x[(n, ch) + i]
            dwf[(o, c) + j] += term
            mag[(o, c) + j] += abs(term)
    return (flipped(dwf, mode), flipped(mag, mode)) if magnitude else flipped(dwf, mode)


def deconv4_shape(w, x, padding=0, stride=1, dilation=1, group=1, output_padding=0):
    d = np.ndim(x) - 2
    p, s, dil = _keys(np.ndim(x), padding, stride, dilation)
    op = per_axis(output_padding, d)
    spatial = tuple(deconv_size(xs, k, *a) for xs, k, a in zip(np.shape(x)[2:], np.shape(w)[2:], zip(p, s, dil, op)))
    return (np.shape(x)[0], np.shape(w)[1] * group) + spatial


def deconv4(w, x, output_padding=0, magnitude=False, **k):
    """deconv4(w, x) == conv4x(w, y0, x), y0 zeros of deconv4's result shape."""
    y0 = np.zeros(deconv4_shape(w, x, k.get("padding", 0), k.get("stride", 1), k.get("dilation", 1),
                                k.get("group", 1), output_padding))  # fmt: skip
    return conv4x(w, y0, x, magnitude=magnitude, **k)


def deconv4w(w, x, dy, output_padding=0, magnitude=False, **k):
    """deconv4w(w, x, dy) == conv4w(w, dy, x)."""
    return conv4w(w, dy, x, magnitude=magnitude, **k)


def deconv4x(w, x, dy, output_padding=0, magnitude=False, **k):
    """deconv4x(w, x, dy) == conv4(w, dy), evaluated at x's positions."""
    return conv4(w, dy, out_spatial=np.shape(x)[2:], magnitude=magnitude, **k)


def _pool_keys(ndim, window, padding, stride):
    d = ndim - 2
    win = per_axis(window, d)
    return win, per_axis(padding, d), per_axis(win if stride is None else stride, d)


def _window_cells(yo, win, p, s, sizes):
    """In-bounds cells of window yo in row-major order within the window."""
    cells = (tuple(yo[a] * s[a] - p[a] + j[a] for a in range(len(win))) for j in positions(win))
    return [i for i in cells if in_bounds(i, sizes)]


def _window_max(values, nan_opt, dtype):
    """Max by semantics.md §4; returns (value, index of the routed cell or None)."""
    if nan_opt == 1:
        for k, v in enumerate(values):
            if math.isnan(v):
                return math.nan, k
    finite = [(v, k) for k, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        return -float(np.finfo(dtype).max), None
    best = max(v for v, _ in finite)
    return best, next(k for v, k in finite if v == best)


def pool(x, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1, dtype=np.float64):
    """alpha * (max | sum/prod(window) | sum/count) over the in-bounds cells of every window."""
    xs = np.asarray(x, np.float64)
    win, p, s = _pool_keys(xs.ndim, window, padding, stride)
    out = tuple(1 + (n + 2 * pa - wi) // st for n, pa, wi, st in zip(xs.shape[2:], p, win, s))
    y = np.zeros(xs.shape[:2] + out)
    for n, c in positions(xs.shape[:2]):
        for yo in positions(out):
            cells = _window_cells(yo, win, p, s, xs.shape[2:])
            values = [xs[(n, c) + i] for i in cells]
            if mode in (0, 3):
                v = _window_max(values, maxpoolingNanOpt, dtype)[0]
            else:
                v = sum(values) / (math.prod(win) if mode == 1 else len(cells))
            y[(n, c) + yo] = alpha * v
    return y


def poolx(x, y, dy, window=2, padding=0, stride=None, mode=0, maxpoolingNanOpt=1, alpha=1, dtype=np.float64):
    """Max: alpha*dy to the first in-bounds max cell (row-major; first NaN if NaN propagates;
    nowhere for an all-NaN window skipping NaN). Average: alpha*dy/divisor to every in-bounds cell."""
    xs, dys = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    win, p, s = _pool_keys(xs.ndim, window, padding, stride)
    dx = np.zeros(xs.shape)
    for n, c in positions(xs.shape[:2]):
        for yo in positions(dys.shape[2:]):
            cells = _window_cells(yo, win, p, s, xs.shape[2:])
            g = alpha * dys[(n, c) + yo]
            if mode in (0, 3):
                k = _window_max([xs[(n, c) + i] for i in cells], maxpoolingNanOpt, dtype)[1]
                if k is not None:
                    dx[(n, c) + cells[k]] += g
            else:
                divisor = math.prod(win) if mode == 1 else len(cells)
                for i in cells:
                    dx[(n, c) + i] += g / divisor
    return dx


def unpool_mode(mode):
    return {0: 1, 1: 2, 2: 1, 3: 1}[mode]


def unpool(x, window=2, padding=0, stride=None, mode=0, alpha=1):
    """The average-pool backward (mapped mode) of x * prod(window), scaled by 1/alpha."""
    xs = np.asarray(x, np.float64)
    win, p, s = _pool_keys(xs.ndim, window, padding, stride)
    out = tuple(st * (n - 1) + wi - 2 * pa for n, wi, pa, st in zip(xs.shape[2:], win, p, s))
    y0 = np.zeros(xs.shape[:2] + out)
    return poolx(y0, None, xs * math.prod(win), window=win, padding=p, stride=s, mode=unpool_mode(mode), alpha=1 / alpha)


def unpoolx(x, y, dy, window=2, padding=0, stride=None, mode=0, alpha=1):
    """prod(window) * pool(dy, mode=mapped, alpha=1/alpha)."""
    win = per_axis(window, np.ndim(x) - 2)
    return math.prod(win) * pool(dy, window=win, padding=padding, stride=stride, mode=unpool_mode(mode), alpha=1 / alpha)


def mat(x, dims=None):
    """x.reshape(prod(shape[:ndim-dims]), prod(shape[ndim-dims:]))."""
    shape = np.shape(x)
    split = len(shape) - (len(shape) - 1 if dims is None else dims)
    return np.asarray(x).reshape(math.prod(shape[:split]), math.prod(shape[split:]))
