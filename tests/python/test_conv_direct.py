"""The direct convolution kernel (csrc/core/cpu_conv_direct.cpp, cpu/_direct.py): which
convolutions it takes, that its results equal im2col's on the benchmark's LeNet shapes, that
non-finite weights leave it for im2col, and that its binding refuses malformed arrays.
(The sweeps run every configuration through both implementations.)"""

import numpy as np
import pytest

import knetcnn
import reference
from cases import force_conv_path
from knetcnn._core import core
from knetcnn.cpu import _direct


@pytest.fixture
def direct_calls(monkeypatch):
    """Records the shapes of x (or dy) each call of the direct kernel gets."""
    calls = []
    kernel = core.conv_direct

    def spy(x, w, y, *rest):
        calls.append(x.shape)
        return kernel(x, w, y, *rest)

    monkeypatch.setattr(_direct, "core", _Spied(core, spy))
    return calls


class _Spied:
    """core, with conv_direct replaced."""

    def __init__(self, real, conv_direct):
        self._real, self.conv_direct = real, conv_direct

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize(
    "dtype, op, taken",
    [
        (np.float64, "conv4", True),  # 1 channel x 25 taps
        (np.float32, "conv4", True),
        (np.float64, "conv4x", True),  # 20 x 25 = 500 terms: float64 takes up to 500
        (np.float32, "conv4x", False),  # float32 only up to 64: its GEMM is twice as fast
        (np.float16, "conv4", False),  # computed in float32 through im2col's converted blocks
    ],
)
def test_lenet_layer_one_routing(direct_calls, dtype, op, taken):
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((20, 1, 5, 5)).astype(dtype), rng.standard_normal((4, 1, 28, 28)).astype(dtype)
    dy = rng.standard_normal((4, 20, 24, 24)).astype(dtype)
    knetcnn.conv4(w, x) if op == "conv4" else knetcnn.conv4x(w, x, dy)
    assert bool(direct_calls) == taken


@pytest.mark.parametrize(
    "kw, w_shape, x_shape",
    [
        (dict(stride=2), (4, 1, 3, 3), (2, 1, 12, 12)),  # stride 2
        (dict(), (4, 1, 3, 3, 3), (2, 1, 6, 6, 6)),  # 3-D
        (dict(padding=1), (64, 64, 3, 3), (2, 64, 8, 8)),  # 64 x 9 taps = 576 > 500, both ways
    ],
)
def test_other_convolutions_stay_with_im2col(direct_calls, kw, w_shape, x_shape):
    rng = np.random.default_rng(2)
    w, x = rng.standard_normal(w_shape), rng.standard_normal(x_shape)
    y = knetcnn.conv4(w, x, **kw)
    knetcnn.conv4x(w, x, np.ones_like(y), **kw)
    assert direct_calls == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "w_shape, x_shape, kw",
    [
        ((20, 1, 5, 5), (8, 1, 28, 28), dict(mode=1)),  # LeNet layer 1
        ((50, 20, 5, 5), (4, 20, 12, 12), dict(mode=1)),  # LeNet layer 2
        ((16, 3, 3, 3), (3, 3, 17, 33), dict(padding=1)),  # odd sizes, padding
        ((6, 4, 3, 3), (2, 8, 9, 19), dict(padding=(2, 0), dilation=(1, 2), group=2, alpha=-0.5)),
        ((4, 3, 5), (3, 3, 40), dict(padding=3, dilation=2)),  # 1-D, padding past the reach
    ],
)
def test_direct_and_im2col_agree(monkeypatch, dtype, w_shape, x_shape, kw):
    rng = np.random.default_rng(3)
    w, x = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(x_shape).astype(dtype)
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape).astype(dtype)
    results = {}
    for path in ("im2col", "direct"):
        force_conv_path(monkeypatch, path)
        results[path] = (knetcnn.conv4(w, x, **kw), knetcnn.conv4x(w, x, dy, **kw),
                         knetcnn.deconv4(w, dy, **kw), knetcnn.deconv4x(w, dy, x, **kw))  # fmt: skip
    tolerance = 1e-4 if dtype == np.float32 else 1e-11
    for got, expect in zip(results["direct"], results["im2col"]):
        assert got.dtype == expect.dtype and got.shape == expect.shape
        np.testing.assert_allclose(got, expect, rtol=tolerance, atol=tolerance * np.abs(expect).max())


def test_non_finite_weights_take_im2col_and_keep_the_formulas_specials(direct_calls):
    """The direct kernel multiplies weights by the zeros it reads outside the data (inf * 0 =
    NaN where the formula has no term): weights with inf or NaN go to im2col."""
    rng = np.random.default_rng(4)
    w, x = rng.standard_normal((2, 3, 3, 2)), rng.standard_normal((2, 3, 6, 7))
    w[1, 2, 0, 1] = np.inf
    dy = rng.uniform(0.5, 1.5, knetcnn.conv4(w, x, mode=1).shape)
    got, expect = knetcnn.conv4x(w, x, dy, mode=1), reference.conv4x(w, x, dy, mode=1)
    assert direct_calls == []
    assert np.isinf(expect).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
    np.testing.assert_array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(expect), expect, 0))
    w[1, 2, 0, 1] = 1.0
    knetcnn.conv4x(w, x, dy, mode=1)
    assert direct_calls  # the same call with finite weights does take it (2 x 6 taps)


@pytest.mark.parametrize("d", [1, 2])
def test_padding_and_dilation_reaching_far_past_the_data_take_im2col(direct_calls, d):
    """With padding = dilation = D, only each window's middle tap lands in x, so conv4 is
    w's middle weight times x. The direct kernel would fill a zero-padded copy of the (5 + 2D)**d
    cells its outputs reach (2**30 doubles in 1-D, 4 * 10**10 in 2-D: a MemoryError or seconds of
    zeros); im2col needs 3**d columns per output."""
    big = 2**29 if d == 1 else 10**5
    rng = np.random.default_rng(5)
    w, x = rng.standard_normal((1, 1) + (3,) * d), rng.standard_normal((2, 1) + (5,) * d)
    middle = w[(0, 0) + (1,) * d]
    kw = dict(padding=big, dilation=big)
    np.testing.assert_allclose(knetcnn.conv4(w, x, **kw), middle * x, rtol=1e-15)
    np.testing.assert_allclose(knetcnn.conv4x(w, x, x, **kw), middle * x, rtol=1e-15)
    np.testing.assert_allclose(knetcnn.deconv4(w, x, **kw), middle * x, rtol=1e-15)
    assert direct_calls == []
    assert _direct.reach_fits(_Shape(k=(3,) * d, dilation=(2,) * d), (5,) * d)  # small reaches still fit


def test_strided_data_takes_the_direct_kernel_only_where_a_whole_copy_fits_the_budget(monkeypatch, direct_calls):
    """The kernel reads x whole, so a Fortran-order x is first copied whole: here 2 MiB for a
    128 KiB result. With the budget cut to twice the result, im2col (which converts a block at a
    time) takes it; a C-contiguous x, read in place, still goes direct."""
    from knetcnn.cpu import _chunks

    rng = np.random.default_rng(6)
    w, x = rng.standard_normal((1, 16, 1, 1)), rng.standard_normal((4, 16, 64, 64))
    fortran = np.asfortranarray(x)
    expect = knetcnn.conv4(w, x)
    np.testing.assert_allclose(knetcnn.conv4(w, fortran), expect, rtol=1e-12, atol=1e-12)
    assert len(direct_calls) == 2  # within the 256 MiB floor: both direct
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", 0)
    direct_calls.clear()
    np.testing.assert_allclose(knetcnn.conv4(w, fortran), expect, rtol=1e-12, atol=1e-12)
    assert direct_calls == []
    knetcnn.conv4(w, x)
    assert len(direct_calls) == 1


class _Shape:
    """The fields of a ConvShape that reach_fits reads."""

    def __init__(self, k, dilation):
        self.k, self.dilation = k, dilation


def _arrays(dtype=np.float64):
    return np.zeros((1, 2, 5, 5), dtype), np.zeros((3, 2, 3, 3), dtype), np.zeros((1, 3, 3, 3), dtype)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda x, w, y: (x.reshape(1, 2, 25), w, y), ValueError, "x must be 4-D"),
        (lambda x, w, y: (x, w.astype(np.float32), y), TypeError, "w must have x's dtype"),
        (lambda x, w, y: (x[..., ::2], w, y), ValueError, "x must be C-contiguous"),
        (lambda x, w, y: (x, np.zeros((3, 1, 3, 3)), y), ValueError, "w.shape[1] * groups must equal x's channels"),
        (lambda x, w, y: (x, w, y[..., ::2]), ValueError, "y must be C-contiguous"),
        (lambda x, w, y: (x, w, np.zeros((1, 2, 3, 3))), ValueError, "y must have x's items and w's outputs"),
        (lambda x, w, y: (x.astype(np.int32), w, y), TypeError, "x must be float32 or float64"),
    ],
)
def test_binding_refuses_malformed_arrays(change, error, message):
    x, w, y = change(*_arrays())
    with pytest.raises(error) as info:
        core.conv_direct(x, w, y, 1, (0, 0), (1, 1))
    assert "conv_direct" in str(info.value) and message in str(info.value)


def test_binding_refuses_bad_groups_and_dilation():
    x, w, y = _arrays()
    with pytest.raises(ValueError, match="conv_direct: w.shape\\[1\\] \\* groups"):
        core.conv_direct(x, w, y, 0, (0, 0), (1, 1))
    with pytest.raises(ValueError, match="conv_direct: .*dilations .* must be >= 1"):
        core.conv_direct(x, w, y, 1, (0, 0), (1, 0))
    y.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writeable"):
        core.conv_direct(x, w, y, 1, (0, 0), (1, 1))
