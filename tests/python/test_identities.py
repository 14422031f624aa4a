"""semantics.md §3's adjoint identities for many keyword combinations, and central finite
differences (float64) for every gradient call."""

import numpy as np
import pytest

import knetcnn
from cases import conv_config, deconv_config, pool_config, pool_data


def dot(a, b):
    return float(np.vdot(a.astype(np.float64), b.astype(np.float64)))


def assert_equal_products(*values, what):
    scale = max(1.0, *(abs(v) for v in values))
    for v in values[1:]:
        assert abs(v - values[0]) <= 1e-11 * scale, f"{what}: {values}"


def _conv_arrays(rng, cfg):
    return rng.standard_normal(cfg["w"]), rng.standard_normal(cfg["x"])


def _output_padding_back_to(x_shape, w_shape, kw):
    """output_padding that makes deconv4 map conv4's output back onto x's exact shape."""
    d = len(x_shape) - 2
    pick = lambda v: (v,) * d if isinstance(v, int) else v  # noqa: E731
    p, s, dil = pick(kw["padding"]), pick(kw["stride"]), pick(kw["dilation"])
    return tuple((x + 2 * pa - ((k - 1) * di + 1)) % st for x, k, pa, st, di in zip(x_shape[2:], w_shape[2:], p, s, dil))


@pytest.mark.parametrize("seed", range(4))
def test_conv4_adjoint_identities(seed):
    rng = np.random.default_rng([51, seed])
    for _ in range(50):
        cfg = conv_config(rng)
        kw = cfg["kwargs"]
        w, x = _conv_arrays(rng, cfg)
        y = knetcnn.conv4(w, x, **kw)
        z = rng.standard_normal(y.shape)
        back = knetcnn.deconv4(w, z, output_padding=_output_padding_back_to(x.shape, w.shape, kw), **kw)
        assert back.shape == x.shape
        assert_equal_products(
            dot(y, z), dot(x, knetcnn.conv4x(w, x, z, **kw)), dot(x, back), dot(w, knetcnn.conv4w(w, x, z, **kw)),
            what=f"{cfg}",
        )


@pytest.mark.parametrize("seed", range(4))
def test_deconv4_adjoint_identities(seed):
    rng = np.random.default_rng([53, seed])
    for _ in range(50):
        cfg = deconv_config(rng)
        kw = cfg["kwargs"]
        w, x = _conv_arrays(rng, cfg)
        y = knetcnn.deconv4(w, x, **kw)
        z = rng.standard_normal(y.shape)
        assert_equal_products(
            dot(y, z), dot(x, knetcnn.deconv4x(w, x, z, **kw)), dot(w, knetcnn.deconv4w(w, x, z, **kw)), what=f"{cfg}"
        )


@pytest.mark.parametrize("seed", range(4))
def test_unpool_and_average_pool_adjoints(seed):
    rng = np.random.default_rng([57, seed])
    for _ in range(50):
        cfg = pool_config(rng, unpooling=True)
        kw = cfg["kwargs"]
        x = rng.standard_normal(cfg["x"])
        u = knetcnn.unpool(x, **kw)
        z = rng.standard_normal(u.shape)
        assert_equal_products(dot(u, z), dot(x, knetcnn.unpoolx(x, u, z, **kw)), what=f"unpool {cfg}")

        cfg = pool_config(rng)
        kw = dict(cfg["kwargs"], mode=int(rng.choice([1, 2])))
        x = rng.standard_normal(cfg["x"])
        y = knetcnn.pool(x, **kw)
        z = rng.standard_normal(y.shape)
        assert_equal_products(dot(y, z), dot(x, knetcnn.poolx(x, y, z, **kw)), what=f"pool {cfg}")


def directional_check(loss, grad, point, rng, what, h=1e-6, directions=3):
    """<grad, v> against the central difference of loss along random directions v."""
    for _ in range(directions):
        v = rng.standard_normal(point.shape)
        numeric = (loss(point + h * v) - loss(point - h * v)) / (2 * h)
        analytic = dot(grad, v)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), f"{what}: {numeric} vs {analytic}"


@pytest.mark.parametrize("family", ["conv4", "deconv4"])
def test_conv_gradients_match_finite_differences(family):
    rng = np.random.default_rng([59, family == "conv4"])
    forward, grad_w, grad_x = (getattr(knetcnn, family + s) for s in ("", "w", "x"))
    config = conv_config if family == "conv4" else deconv_config
    for _ in range(40):
        cfg = config(rng)
        kw = cfg["kwargs"]
        w, x = _conv_arrays(rng, cfg)
        dy = rng.standard_normal(forward(w, x, **kw).shape)
        directional_check(lambda w_: dot(dy, forward(w_, x, **kw)), grad_w(w, x, dy, **kw), w, rng, f"{family}w {cfg}")
        directional_check(lambda x_: dot(dy, forward(w, x_, **kw)), grad_x(w, x, dy, **kw), x, rng, f"{family}x {cfg}")


def test_pool_gradients_match_finite_differences():
    rng = np.random.default_rng(61)
    for _ in range(60):
        cfg = pool_config(rng)
        kw = dict(cfg["kwargs"], maxpoolingNanOpt=1)
        x = pool_data(rng, cfg["x"], np.float64, "distinct")  # tie-free: gaps of 0.25 >> h
        y = knetcnn.pool(x, **kw)
        dy = rng.standard_normal(y.shape)
        directional_check(lambda x_: dot(dy, knetcnn.pool(x_, **kw)), knetcnn.poolx(x, y, dy, **kw), x, rng, f"poolx {cfg}")


def test_unpool_gradient_matches_finite_differences():
    rng = np.random.default_rng(67)
    for _ in range(60):
        cfg = pool_config(rng, unpooling=True)
        kw = cfg["kwargs"]
        x = rng.standard_normal(cfg["x"])
        y = knetcnn.unpool(x, **kw)
        dy = rng.standard_normal(y.shape)
        directional_check(lambda x_: dot(dy, knetcnn.unpool(x_, **kw)), knetcnn.unpoolx(x, y, dy, **kw), x, rng, f"unpoolx {cfg}")
