"""Seeded random configurations for the sweeps, and comparisons with dtype-aware tolerances.

Shapes are tiny (the reference is scalar loops); every keyword is drawn, per axis, as an int or
a tuple, so both spellings are exercised.
"""

from __future__ import annotations

import numpy as np

DTYPES = (np.float16, np.float32, np.float64)
ALPHAS = (1.0, 1.0, 0.5, -2.0, 2.5)
# Spatial sizes stay smaller as the rank grows, to keep the reference fast.
_MAX_KERNEL = {1: 4, 2: 3, 3: 2}
_EXTRA_SIZE = {1: 8, 2: 5, 3: 3}


CONV_PATHS = ("im2col", "direct", "winograd")


def force_conv_path(monkeypatch, path: str) -> None:
    """Send every CPU convolution to one implementation: "im2col" (columns + BLAS), "direct" (the
    direct kernel, wherever it applies: stride 1, 1-D or 2-D, finite weights, no float16) or
    "winograd" (F(2x2, 3x3) wherever it applies: 3x3 2-D, stride 1, undilated, padding <= 2,
    float32 / float64 operands in range, any channel count); the others take im2col."""
    from knetcnn.cpu import _direct, _winograd

    limit = 1 << 62 if path == "direct" else 0
    monkeypatch.setattr(_direct, "MAX_REDUCTION", {np.dtype(np.float32): limit, np.dtype(np.float64): limit})
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 1 if path == "winograd" else 1 << 62)


def axis_kw(rng, values):
    """An int when every axis agrees (most of the time), else a tuple."""
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 and rng.random() < 0.6 else tuple(values)


def _common(rng):
    d = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    return d, DTYPES[rng.integers(3)], float(rng.choice(ALPHAS))


def conv_config(rng):
    d, dtype, alpha = _common(rng)
    group = int(rng.choice([1, 1, 2, 3]))
    cg, og, n = (int(v) for v in rng.integers(1, 4, 3))
    k = rng.integers(1, _MAX_KERNEL[d] + 1, d)
    dil, s, p = rng.integers(1, 3, d), rng.integers(1, 4, d), rng.integers(0, 3, d)
    span = (k - 1) * dil + 1
    x = np.maximum(1, span - 2 * p) + rng.integers(0, _EXTRA_SIZE[d], d)
    kwargs = dict(padding=axis_kw(rng, p), stride=axis_kw(rng, s), dilation=axis_kw(rng, dil),
                  mode=int(rng.integers(2)), alpha=alpha, group=group)  # fmt: skip
    w_shape = (group * og, cg) + tuple(int(v) for v in k)
    x_shape = (n, group * cg) + tuple(int(v) for v in x)
    return dict(w=w_shape, x=x_shape, dtype=dtype, kwargs=kwargs)


def deconv_config(rng):
    d, dtype, alpha = _common(rng)
    group = int(rng.choice([1, 1, 2, 3]))
    cin, cout, n = (int(v) for v in rng.integers(1, 4, 3))
    k = rng.integers(1, _MAX_KERNEL[d] + 1, d)
    dil, s = rng.integers(1, 3, d), rng.integers(1, 4, d)
    x = rng.integers(1, 1 + {1: 6, 2: 4, 3: 3}[d], d)
    op = np.array([rng.integers(0, max(a, b)) for a, b in zip(s, dil)])
    p = rng.integers(0, 3, d)
    size = s * (x - 1) + (k - 1) * dil + 1 - 2 * p + op
    p = np.where(size >= 1, p, 0)
    kwargs = dict(padding=axis_kw(rng, p), stride=axis_kw(rng, s), dilation=axis_kw(rng, dil),
                  mode=int(rng.integers(2)), alpha=alpha, group=group, output_padding=axis_kw(rng, op))  # fmt: skip
    w_shape = (group * cin, cout) + tuple(int(v) for v in k)
    x_shape = (n, group * cin) + tuple(int(v) for v in x)
    return dict(w=w_shape, x=x_shape, dtype=dtype, kwargs=kwargs)


def pool_config(rng, unpooling=False):
    d, dtype, alpha = _common(rng)
    win = rng.integers(1, _MAX_KERNEL[d] + 1, d)
    p = np.array([rng.integers(0, w) for w in win])
    s = rng.integers(1, 4, d)
    if unpooling:
        x = rng.integers(1, 1 + {1: 6, 2: 4, 3: 3}[d], d)
        p = np.where(s * (x - 1) + win - 2 * p >= 1, p, 0)
    else:
        x = np.maximum(1, win - 2 * p) + rng.integers(0, _EXTRA_SIZE[d], d)
    kwargs = dict(window=axis_kw(rng, win), padding=axis_kw(rng, p),
                  stride=None if rng.random() < 0.3 else axis_kw(rng, s),
                  mode=int(rng.integers(4)), alpha=alpha)  # fmt: skip
    if not unpooling:
        kwargs["maxpoolingNanOpt"] = int(rng.integers(2))
    x_shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) + tuple(int(v) for v in x)
    return dict(x=x_shape, dtype=dtype, kwargs=kwargs, data=str(rng.choice(["distinct", "ties", "nan"])))


def normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def pool_data(rng, shape, dtype, kind):
    """'distinct': no ties; 'ties': small integers (many ties); 'nan': distinct with NaN and -inf."""
    size = int(np.prod(shape))
    if kind == "ties":
        return rng.integers(-2, 3, shape).astype(dtype)
    x = ((rng.permutation(size) - size // 2) * 0.25).reshape(shape).astype(dtype)
    if kind == "nan":
        x[rng.random(shape) < 0.25] = np.nan
        x[rng.random(shape) < 0.1] = -np.inf
    return x


def compute_eps(dtype):
    return np.finfo(np.float32 if dtype == np.float16 else dtype).eps


def assert_close(ours, ref, scale, dtype, what, terms=256):
    """|ours - ref| <= (eps(dtype) + terms * eps(compute dtype)) * scale, elementwise.

    `scale` bounds the sum of |terms| behind each element (an array or a number); NaNs and
    infinities must match exactly. The reference is first rounded to `dtype`, so a value that
    overflows the dtype is expected as an infinity.
    """
    with np.errstate(over="ignore"):
        ref = np.asarray(ref, np.float64).astype(dtype).astype(np.float64)
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape}, expected {ref.shape}"
    o = ours.astype(np.float64)
    exact = (o == ref) | (np.isnan(o) & np.isnan(ref))
    tol = (np.finfo(dtype).eps + terms * compute_eps(dtype)) * np.asarray(scale) + np.finfo(dtype).tiny
    with np.errstate(invalid="ignore"):
        ok = exact | (np.abs(o - ref) <= tol)
    if not ok.all():
        bad = np.argwhere(~ok)[0]
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} differ; first at {tuple(bad)}: "
            f"ours {o[tuple(bad)]!r}, reference {ref[tuple(bad)]!r}"
        )


def finite_max(a) -> float:
    a = np.abs(np.asarray(a, np.float64))
    return float(np.max(a[np.isfinite(a)], initial=0.0))


def check_family_against_reference(family: str, rng, cfg, elementwise: bool = True) -> None:
    """family(w, x), its x- and w-gradients, for one conv_config / deconv_config against the
    loop reference (family is "conv4" or "deconv4"); the gradients get a random dy.

    Each element's error is bounded by its own terms' magnitudes, or, without `elementwise`, by
    the largest element's: Winograd's transforms mix neighbouring cells, so a cell whose terms are
    all zero (a filter tap that only reads padding) gets rounding noise from its neighbours."""
    import knetcnn
    import reference

    dtype, kw = cfg["dtype"], cfg["kwargs"]
    w, x = normal(rng, cfg["w"], dtype), normal(rng, cfg["x"], dtype)
    what = f"{cfg}"
    scale = (lambda mag: mag) if elementwise else (lambda mag: np.max(mag, initial=0.0))
    ref, mag = getattr(reference, family)(w, x, magnitude=True, **kw)
    assert_close(getattr(knetcnn, family)(w, x, **kw), ref, scale(mag), dtype, f"{family} {what}")
    dy = normal(rng, ref.shape, dtype)
    for grad in (family + "x", family + "w"):
        ref, mag = getattr(reference, grad)(w, x, dy, magnitude=True, **kw)
        assert_close(getattr(knetcnn, grad)(w, x, dy, **kw), ref, scale(mag), dtype, f"{grad} {what}")
