"""Every im2col layout (narrow; wide rows for stride-1 planes; batch-last for stride 1 on the
last axis) agrees with the reference on the same configurations, whichever the cost model
would pick; non-finite values never leak through the wide layout's garbage columns."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import assert_close, conv_config, normal
from knetcnn.cpu import _chunks, _conv_layouts, conv


LAYOUTS = {
    "narrow": _conv_layouts.Narrow,
    "wide": _conv_layouts.Wide,
    "batchlast": _conv_layouts.BatchLast,
    "phased": _conv_layouts.Phased,
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request, monkeypatch):
    forced = LAYOUTS[request.param]

    def pick(cv, scatter):
        return forced(cv) if forced is _conv_layouts.Narrow or forced.fits(cv) else _conv_layouts.Narrow(cv)

    monkeypatch.setattr(conv, "choose", pick)
    return request.param


def test_each_layout_matches_reference(layout):
    rng = np.random.default_rng(71)
    checked = 0
    while checked < 60:
        cfg = conv_config(rng)
        kw = cfg["kwargs"]
        d = len(cfg["x"]) - 2
        stride = reference.per_axis(kw["stride"], d)
        unit = {"narrow": 0, "wide": 2, "batchlast": 1, "phased": 0}[layout]  # trailing axes needing stride 1
        if unit > d or any(s != 1 for s in stride[d - unit :]) or (layout == "phased" and d < 2):
            continue  # a configuration the forced layout does not fit
        checked += 1
        dtype = cfg["dtype"]
        w, x = normal(rng, cfg["w"], dtype), normal(rng, cfg["x"], dtype)
        ref, mag = reference.conv4(w, x, magnitude=True, **kw)
        assert_close(knetcnn.conv4(w, x, **kw), ref, mag, dtype, f"conv4 {layout} {cfg}")
        dy = normal(rng, ref.shape, dtype)
        ref, mag = reference.conv4x(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4x(w, x, dy, **kw), ref, mag, dtype, f"conv4x {layout} {cfg}")
        ref, mag = reference.conv4w(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4w(w, x, dy, **kw), ref, mag, dtype, f"conv4w {layout} {cfg}")


@pytest.mark.parametrize("d", [1, 2, 3])
def test_each_layout_in_small_blocks(layout, monkeypatch, d):
    """Blocks of single items and single output rows give the same result as one block."""
    rng = np.random.default_rng([79, d])
    w = rng.standard_normal((4, 3) + (3,) * d)
    x = rng.standard_normal((3, 6) + (7, 6, 5)[:d])
    kw = dict(padding=(1, 0, 2)[:d], dilation=(1, 2, 1)[:d], group=2, alpha=0.5)
    y = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    ops = [lambda: knetcnn.conv4(w, x, **kw), lambda: knetcnn.conv4x(w, x, y, **kw), lambda: knetcnn.conv4w(w, x, y, **kw)]
    whole = [op() for op in ops]
    for name, value in (("TARGET_BYTES", 256), ("MIN_BUDGET_BYTES", 256), ("RESULT_FACTOR", 0)):
        monkeypatch.setattr(_chunks, name, value)
    for op, expect in zip(ops, whole):
        np.testing.assert_allclose(op(), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1])
def test_non_finite_values_stay_where_the_formula_puts_them(layout, padding):
    rng = np.random.default_rng(73)
    w = rng.standard_normal((2, 3, 3, 2))
    x = rng.standard_normal((2, 3, 6, 7))
    w[1, 2, 0, 1] = np.inf
    x[0, 1, 2, 6] = -np.inf
    kw = dict(padding=padding, mode=1)
    y = knetcnn.conv4(w, np.nan_to_num(x, neginf=0.0), **kw)
    dy = rng.uniform(0.5, 1.5, y.shape)  # no zeros: inf * 0 must come only from garbage, if at all
    assert_same_specials(knetcnn.conv4x(w, x, dy, **kw), reference.conv4x(w, x, dy, **kw))
    assert_same_specials(knetcnn.conv4w(w, x, dy, **kw), reference.conv4w(w, x, dy, **kw))


def assert_same_specials(got, expect):
    """NaN and +-inf exactly where the reference has them; finite values equal up to rounding."""
    assert np.isinf(expect).any() or np.isnan(expect).any()  # the case is not vacuous
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
    np.testing.assert_array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(expect), expect, 0))
    finite = np.isfinite(expect)
    np.testing.assert_allclose(got[finite], expect[finite], rtol=1e-12, atol=1e-12)


def _shape(w, x, stride=1, padding=0):
    return _conv_layouts.ConvShape(
        knetcnn._geometry.conv("conv4", w, x, padding=padding, stride=stride, dilation=1, mode=1, group=1)
    )


def test_choice_follows_the_cost_model_on_the_benchmark_shapes():
    choose, L = _conv_layouts.choose, _conv_layouts
    vgg = _shape((64, 64, 3, 3), (8, 64, 56, 56), padding=1)  # long rows: transposes cost more
    assert type(choose(vgg, scatter=True)) is L.Wide and type(choose(vgg, scatter=False)) is L.Narrow
    alexnet = _shape((96, 3, 11, 11), (8, 3, 227, 227), stride=4)  # strided: phases
    assert type(choose(alexnet, scatter=True)) is L.Phased and type(choose(alexnet, scatter=False)) is L.Phased
    downsample = _shape((128, 64, 3, 3), (8, 64, 56, 56), stride=2, padding=1)  # phases only to scatter
    assert type(choose(downsample, scatter=True)) is L.Phased and type(choose(downsample, scatter=False)) is L.Narrow
    resnet = _shape((256, 256, 3, 3), (8, 256, 14, 14), padding=1)  # short rows, many of them
    assert type(choose(resnet, scatter=False)) is L.BatchLast
    lenet2 = _shape((50, 20, 5, 5), (64, 20, 12, 12))
    assert type(choose(lenet2, scatter=True)) is L.BatchLast
    lenet1 = _shape((20, 1, 5, 5), (64, 1, 28, 28))  # one channel: few rows to save
    assert type(choose(lenet1, scatter=False)) is L.Narrow
    assert type(choose(lenet1, scatter=True)) is L.Wide  # 1/6 garbage, but only 20 outputs each
