"""Both im2col layouts (narrow, and wide rows for stride-1 planes) agree with the reference on
the same configurations, whichever the cost model would pick; non-finite values never leak
through the wide layout's garbage columns."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import assert_close, conv_config, normal
from knetcnn.cpu import _conv_layouts, conv


@pytest.fixture(params=["narrow", "wide"])
def layout(request, monkeypatch):
    def pick(cv, scatter):
        wide = request.param == "wide" and _conv_layouts.Wide.fits(cv)
        return _conv_layouts.Wide(cv) if wide else _conv_layouts.Narrow(cv)

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
        if d < 2 or stride[-2:] != (1, 1):
            continue  # only stride-1 planes have two layouts
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


def test_choice_wide_only_for_scatters_with_long_rows():
    vgg = _shape((64, 64, 3, 3), (8, 64, 56, 56), padding=1)
    assert isinstance(_conv_layouts.choose(vgg, scatter=True), _conv_layouts.Wide)
    assert type(_conv_layouts.choose(vgg, scatter=False)) is _conv_layouts.Narrow
    strided = _shape((96, 3, 11, 11), (8, 3, 227, 227), stride=4)
    assert type(_conv_layouts.choose(strided, scatter=True)) is _conv_layouts.Narrow
    short_rows = _shape((64, 64, 3, 3), (8, 64, 14, 14), padding=1)
    assert type(_conv_layouts.choose(short_rows, scatter=True)) is _conv_layouts.Narrow
