"""The CPU convolutions' scratch stays within issue 3's bound (a few times the result, or 256 MiB)
in the corners that used to break it, shown at small scale with the budget patched down to
BUDGET and tracemalloc counting NumPy's allocations: byte-swapped input, filters bigger than the
budget, output rows whose columns alone are past it, and dilations that skip most of the input.
In each corner the values are those of the unbounded path."""

import tracemalloc

import numpy as np
import pytest

import knetcnn
from cases import force_conv_path
from knetcnn.cpu import _chunks, _conv_blocks, _scratch, _weights
from knetcnn.cpu._conv_blocks import ConvShape

BUDGET = 64 << 10


def peak_extra(call):
    """(result, peak bytes NumPy allocated during call, less the result). Scratch buffers kept
    from earlier calls are dropped first, so the call's own are counted."""
    _scratch._local.__dict__.pop("buffers", None)
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - result.nbytes
    finally:
        tracemalloc.stop()


def assert_bounded(what, result, extra):
    """Per block: the columns, the product or dy copy, a converted source and small temporaries
    within a few budgets; or whole copies where the result is larger (a few times the result)."""
    assert extra < max(5 * BUDGET, 3 * result.nbytes), (what, extra, result.nbytes)


@pytest.fixture
def small_budget(monkeypatch):
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", BUDGET)
    monkeypatch.setattr(_chunks, "TARGET_BYTES", BUDGET // 4)
    monkeypatch.setattr(_conv_blocks, "MIN_COLUMNS", 0)
    monkeypatch.setattr(_weights, "SLAB_BYTES", BUDGET // 4)


def _calls(w, x, dy, kw):
    return {
        "conv4": lambda: knetcnn.conv4(w, x, **kw),
        "conv4x": lambda: knetcnn.conv4x(w, x, dy, **kw),
        "conv4w": lambda: knetcnn.conv4w(w, x, dy, **kw),
    }


@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=1, stride=2), dict(padding=2, mode=1)])
def test_byte_swapped_input_is_converted_a_block_at_a_time(small_budget, kw):
    # 1 MiB each of x and dy, against a 64 KiB budget: whole copies would be 16x the budget.
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 8, 3, 3))
    x = rng.standard_normal((4, 8, 64, 64))
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    native = {op: call() for op, call in _calls(w, x, dy, kw).items()}
    for op, call in _calls(w.astype(">f8"), x.astype(">f8"), dy.astype(">f8"), kw).items():
        got, extra = peak_extra(call)
        assert got.dtype == np.float64 and got.dtype.isnative
        np.testing.assert_array_equal(got, native[op], err_msg=op)  # the same kernels, the same bits
        assert_bounded(op, got, extra)


@pytest.mark.parametrize("kw", [dict(), dict(mode=1, alpha=-0.5), dict(group=2, padding=1)])
def test_filters_past_the_budget_are_scaled_a_slab_at_a_time(small_budget, kw):
    # 800 KiB of filters (VGG's fc6 in miniature: the filters cover the whole input) for a
    # 0.5 KiB result: one scaled copy of w would be 12x the budget.
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 32 // kw.get("group", 1), 7, 7))
    x = rng.standard_normal((1, 32, 7, 7))
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    with pytest.MonkeyPatch.context() as unbounded:
        unbounded.setattr(_chunks, "MIN_BUDGET_BYTES", 1 << 30)
        whole = {op: call() for op, call in _calls(w, x, dy, kw).items()}
    for op in ("conv4", "conv4x"):
        got, extra = peak_extra(_calls(w, x, dy, kw)[op])
        np.testing.assert_allclose(got, whole[op], rtol=1e-13, atol=1e-13, err_msg=op)
        assert_bounded(op, got, extra)


@pytest.mark.parametrize("d", [2, 3])
def test_rows_past_the_budget_are_cut_into_runs_of_positions(small_budget, d):
    # One output row's columns: 16 channels x 9 taps x 510 positions x 8 bytes = 574 KiB.
    rng = np.random.default_rng([3, d])
    w = rng.standard_normal((4, 16) + (3,) * d)
    x = rng.standard_normal((2, 16) + (3,) * (d - 1) + (512,))
    kw = dict(padding=(1,) * (d - 1) + (0,))
    g = knetcnn._geometry.conv("test", w.shape, x.shape, padding=kw["padding"], stride=1, dilation=1, mode=0, group=1)
    cv = ConvShape(g)
    assert all(cv.columns(b) < cv.y[-1] for b in cv.blocks(8 * int(np.prod(cv.output_shape)), 8))  # within a line
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    with pytest.MonkeyPatch.context() as unbounded:
        unbounded.setattr(_chunks, "MIN_BUDGET_BYTES", 1 << 30)
        whole = {op: call() for op, call in _calls(w, x, dy, kw).items()}
    for op, call in _calls(w, x, dy, kw).items():
        got, extra = peak_extra(call)
        np.testing.assert_allclose(got, whole[op], rtol=1e-12, atol=1e-12, err_msg=op)
        assert_bounded(op, got, extra)


@pytest.mark.parametrize(
    "x_shape,kw",
    [
        ((1, 2, 2048, 64), dict(dilation=(2047, 1))),  # one row's taps 2047 rows apart
        ((1, 2, 2, 40000), dict(dilation=(1, 32767))),  # and along the row
        ((1, 2, 2048, 64), dict(stride=(64, 1))),
        ((1, 2, 2048, 64), dict(stride=8, padding=3)),
    ],
)
def test_sparse_reads_of_float16_convert_only_what_they_read(small_budget, monkeypatch, x_shape, kw):
    # float16 is gathered in float32. Converting every cell between a block's first and last tap
    # would take ~1 MiB for the dilated cases (16x the budget), for results of a few KiB.
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 2, 2, 2)).astype(np.float16)
    x = rng.standard_normal(x_shape).astype(np.float16)
    force_conv_path(monkeypatch, "im2col")  # float32's own path, so the float32 reference has the same sums
    expect = knetcnn.conv4(w.astype(np.float32), x.astype(np.float32), **kw).astype(np.float16)
    got, extra = peak_extra(lambda: knetcnn.conv4(w, x, **kw))
    np.testing.assert_array_equal(got, expect)  # float16 is computed in float32, rounded once
    assert_bounded(kw, got, extra)
