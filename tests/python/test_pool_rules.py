"""Pooling rules of semantics.md §4 checked directly: NaN options, padding in max pooling,
the one-cell routing of max-pool gradients (ties: first in row-major order), the average
divisors, and unpool as pool's right inverse."""

import itertools

import numpy as np
import pytest

import knetcnn

FLOATS = [np.float16, np.float32, np.float64]


def row(*values, dtype=np.float64):
    return np.array(values, dtype=dtype).reshape(1, 1, -1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_propagates_by_default_and_is_skipped_with_option_0(dtype):
    x = row(1, np.nan, 3, 4, np.nan, np.nan, dtype=dtype)
    np.testing.assert_array_equal(knetcnn.pool(x), row(np.nan, 4, np.nan, dtype=dtype))
    skipped = knetcnn.pool(x, maxpoolingNanOpt=0)
    np.testing.assert_array_equal(skipped, row(1, 4, -np.finfo(dtype).max, dtype=dtype))
    assert skipped.dtype == dtype


@pytest.mark.parametrize("mode", [0, 3])
def test_padding_never_counts_as_a_value_for_max(mode):
    x = row(-5.0, -7.0, -np.inf)
    # Windows: [pad, -5], [-7, -inf]: padding (0 or -inf) must not win or be routed to.
    np.testing.assert_array_equal(knetcnn.pool(x, padding=1, mode=mode), row(-5.0, -7.0))
    x = row(-np.inf, -np.inf, 1.0)
    y = knetcnn.pool(x, padding=1, mode=mode)
    np.testing.assert_array_equal(y, row(-np.inf, 1.0))
    # The all -inf window routes to its in-bounds cell, never to the padding: nothing is lost.
    np.testing.assert_array_equal(knetcnn.poolx(x, y, row(2.0, 3.0), padding=1, mode=mode), row(2.0, 0.0, 3.0))


@pytest.mark.parametrize("mode", [0, 3])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_max_gradient_goes_to_the_first_maximal_cell_on_ties(mode, d):
    rng = np.random.default_rng(d)
    x = rng.integers(0, 2, (2, 3) + (4,) * d).astype(np.float64)  # many ties
    y = knetcnn.pool(x, mode=mode, alpha=2.0)
    dy = rng.standard_normal(y.shape)
    dx = knetcnn.poolx(x, y, dy, mode=mode, alpha=2.0)
    # Non-overlapping 2-wide windows: exactly one cell per window gets 2*dy, the first maximum.
    for n, c, *yo in itertools.product(*(range(s) for s in y.shape)):
        window = tuple(slice(2 * i, 2 * i + 2) for i in yo)
        cells, grads = x[(n, c) + window].ravel(), dx[(n, c) + window].ravel()
        first = int(np.argmax(cells == cells.max()))
        expected = np.zeros_like(grads)
        expected[first] = 2.0 * dy[(n, c) + tuple(yo)]
        np.testing.assert_array_equal(grads, expected)


def test_overlapping_windows_add_their_routed_gradients():
    x = row(0.0, 5.0, 1.0, 2.0)
    y = knetcnn.pool(x, window=3, stride=1)  # both windows pick the 5
    np.testing.assert_array_equal(knetcnn.poolx(x, y, row(1.0, 10.0), window=3, stride=1), row(0.0, 11.0, 0.0, 0.0))


def test_max_gradient_routing_for_nan_windows():
    x = row(1.0, np.nan, np.nan, 4.0, np.nan, np.nan)
    dy = row(1.0, 2.0, 3.0)
    # Option 1: the window's value is NaN; its gradient goes to its first NaN cell.
    y = knetcnn.pool(x)
    np.testing.assert_array_equal(knetcnn.poolx(x, y, dy), row(0.0, 1.0, 2.0, 0.0, 3.0, 0.0))
    # Option 0: the first maximum of the non-NaN cells; an all-NaN window (output -finfo.max,
    # independent of x) routes nowhere.
    y = knetcnn.pool(x, maxpoolingNanOpt=0)
    np.testing.assert_array_equal(knetcnn.poolx(x, y, dy, maxpoolingNanOpt=0), row(1.0, 0.0, 0.0, 2.0, 0.0, 0.0))


def test_poolx_recomputes_the_max_from_x_not_from_y():
    x = row(1.0, 3.0, 2.0, 0.5)
    dy = row(1.0, 1.0)
    right = knetcnn.poolx(x, knetcnn.pool(x, alpha=3.0), dy, alpha=3.0)
    garbage = knetcnn.poolx(x, row(123.0, -7.0), dy, alpha=3.0)  # Knet passed alpha*y: must not matter
    np.testing.assert_array_equal(right, row(0.0, 3.0, 3.0, 0.0))
    np.testing.assert_array_equal(garbage, right)


def test_average_divisors_with_padding():
    x = row(1.0, 2.0, 3.0, 4.0)
    # Windows of 3 with padding 1 and stride 3: [pad, 1, 2] and [3, 4, pad].
    np.testing.assert_allclose(knetcnn.pool(x, window=3, padding=1, mode=1), row(1.0, 7.0 / 3))
    np.testing.assert_allclose(knetcnn.pool(x, window=3, padding=1, mode=2), row(1.5, 3.5))
    dy = row(3.0, 6.0)
    np.testing.assert_allclose(knetcnn.poolx(x, x[..., :2], dy, window=3, padding=1, mode=1), row(1.0, 1.0, 2.0, 2.0))
    np.testing.assert_allclose(knetcnn.poolx(x, x[..., :2], dy, window=3, padding=1, mode=2), row(1.5, 1.5, 3.0, 3.0))


def test_mode_3_is_max_forward_and_backward():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    kw = dict(window=3, stride=2, padding=1)
    y0, y3 = knetcnn.pool(x, mode=0, **kw), knetcnn.pool(x, mode=3, **kw)
    np.testing.assert_array_equal(y0, y3)
    dy = rng.standard_normal(y0.shape)
    np.testing.assert_array_equal(knetcnn.poolx(x, y0, dy, mode=0, **kw), knetcnn.poolx(x, y3, dy, mode=3, **kw))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_pool_of_unpool_is_identity(d, mode, dtype):
    rng = np.random.default_rng([d, mode])
    for _ in range(6):
        size = rng.integers(1, 4, d)
        window = rng.integers(1, 4, d)
        stride = window + rng.integers(0, 2, d)  # windows do not overlap
        # padding < window, and small enough that unpool's result has at least one cell.
        padding = np.minimum(rng.integers(0, window), (stride * (size - 1) + window - 1) // 2)
        x = rng.integers(-8, 9, (2, 2) + tuple(int(v) for v in size)).astype(dtype)
        kw = dict(window=tuple(int(v) for v in window), padding=tuple(int(v) for v in padding),
                  stride=tuple(int(v) for v in stride), mode=mode, alpha=float(rng.choice([1.0, 2.0, 0.5])))  # fmt: skip
        u = knetcnn.unpool(x, **kw)
        np.testing.assert_allclose(knetcnn.pool(u, **kw), x, rtol=4 * np.finfo(dtype).eps, err_msg=str(kw))


def test_unpool_uses_knets_mode_mapping():
    x = row(6.0, 12.0)
    # mode 0 -> average with padding counted: every covered cell gets x.
    np.testing.assert_allclose(knetcnn.unpool(x, window=3, padding=1), row(6.0, 6.0, 12.0, 12.0))
    # mode 1 -> average with padding excluded: x * 3 / (2 in-bounds cells) on the edge windows.
    np.testing.assert_allclose(knetcnn.unpool(x, window=3, padding=1, mode=1), row(9.0, 9.0, 18.0, 18.0))
    np.testing.assert_allclose(knetcnn.unpool(x, window=3, padding=1, mode=2), row(6.0, 6.0, 12.0, 12.0))
