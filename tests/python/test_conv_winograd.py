"""Winograd F(2x2, 3x3) (csrc/core/cpu_winograd.cpp, cpu/_winograd.py): every op of both
families against the loop reference on 300 random configurations inside its domain (errors
bounded by the largest element's terms: its transforms mix neighbouring cells), its
transforms against their matrix definitions, the operands it must leave to im2col (NaN,
infinities, values that could overflow an intermediate, float16), which convolutions it takes,
and its binding's refusals."""

import numpy as np
import pytest

import knetcnn
from cases import DTYPES, assert_close, axis_kw, check_family_against_reference, force_conv_path
from knetcnn._core import core
from knetcnn.cpu import _winograd

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


@pytest.fixture
def transforms(monkeypatch):
    """Counts the calls of each compiled transform."""
    calls = {"input": 0, "output": 0, "gradient": 0}

    class Counting:
        def __getattr__(self, name):
            real = getattr(core, name)
            if not name.startswith("winograd_"):
                return real

            def counted(*args, **kw):
                calls[name.removeprefix("winograd_")] += 1
                return real(*args, **kw)

            return counted

    monkeypatch.setattr(_winograd, "core", Counting())
    return calls


def _config(rng, family):
    """A convolution inside Winograd's domain: 2-D 3x3, stride 1, undilated, padding 0-2 per axis."""
    group = int(rng.choice([1, 1, 2, 3]))
    a, b, n = (int(v) for v in rng.integers(1, 4, 3))
    p = rng.integers(0, 3, 2)
    if family == "conv4":
        x = np.maximum(1, 3 - 2 * p) + rng.integers(0, 7, 2)  # odd and even outputs, 1-4 tiles a side
    else:  # deconv4's output, x - 1 + 3 - 2p, must be >= 1
        x = rng.integers(1, 7, 2)
        p = np.where(x + 2 - 2 * p >= 1, p, 0)
    kwargs = dict(padding=axis_kw(rng, p), mode=int(rng.integers(2)), group=group,
                  alpha=float(rng.choice([1.0, -0.5, 2.0])))  # fmt: skip
    if rng.random() < 0.3:
        kwargs.update(stride=1, dilation=1)  # spelled out or not
    dtype = DTYPES[rng.integers(3)]
    return dict(w=(group * a, b, 3, 3), x=(n, group * (b if family == "conv4" else a)) + tuple(int(v) for v in x),
                dtype=dtype, kwargs=kwargs)  # fmt: skip


@pytest.mark.parametrize("family", ["conv4", "deconv4"])
@pytest.mark.parametrize("batch", range(6))
def test_both_families_match_the_reference(monkeypatch, transforms, family, batch):
    force_conv_path(monkeypatch, "winograd")
    rng = np.random.default_rng([47, batch, family == "conv4"])
    for _ in range(25):
        check_family_against_reference(family, rng, _config(rng, family), elementwise=False)
    assert transforms["input"] > 0 and transforms["output"] > 0 and transforms["gradient"] > 0


def test_input_transform_is_b_transposed_d_b_of_every_tile():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 7))
    tiles_h, tiles_w, top, left = 3, 4, 2, 1
    v = np.empty((16, 3, 2 * tiles_h * tiles_w))
    core.winograd_input(x, v, tiles_h, tiles_w, top, left, parallel=False)
    padded = np.zeros((2, 3, 2 * tiles_h + 2 + top, 2 * tiles_w + 2 + left))
    padded[:, :, top : top + 5, left : left + 7] = x  # zeros around x, and past it where tiles reach
    for n in range(2):
        for i in range(tiles_h):
            for j in range(tiles_w):
                d = padded[:, :, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4][n]
                expect = (B_T @ d @ B_T.T).reshape(3, 16).T
                np.testing.assert_array_equal(v[:, :, (n * tiles_h + i) * tiles_w + j], expect)


@pytest.mark.parametrize("height, width", [(4, 6), (5, 3), (1, 1)])
def test_output_transform_writes_a_t_m_a_cropped_to_y(height, width):
    rng = np.random.default_rng(2)
    tiles_h, tiles_w = -(-height // 2), -(-width // 2)
    m = rng.standard_normal((16, 2, 3 * tiles_h * tiles_w))
    y = np.full((3, 2, height, width), np.nan)
    core.winograd_output(m, y, parallel=True)
    full = np.empty((3, 2, 2 * tiles_h, 2 * tiles_w))
    for n in range(3):
        for i in range(tiles_h):
            for j in range(tiles_w):
                tile = m[:, :, (n * tiles_h + i) * tiles_w + j].T.reshape(2, 4, 4)
                full[n, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = A_T @ tile @ A_T.T
    np.testing.assert_allclose(y, full[:, :, :height, :width], rtol=1e-14, atol=1e-14)


def test_gradient_transform_is_a_e_a_transposed_of_every_2x2_tile():
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((2, 3, 3, 5)).astype(np.float32)
    g = np.empty((16, 3, 2 * 2 * 3), np.float32)
    core.winograd_gradient(dy, g, parallel=True)
    padded = np.zeros((2, 3, 4, 6), np.float32)
    padded[:, :, :3, :5] = dy
    for n in range(2):
        for i in range(2):
            for j in range(3):
                e = padded[n, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                expect = (A_T.T @ e @ A_T).reshape(3, 16).T
                np.testing.assert_allclose(g[:, :, (n * 2 + i) * 3 + j], expect, rtol=1e-6, atol=1e-6)


def _operands(dtype=np.float64, channels=16):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(dtype)
    x = rng.standard_normal((2, channels, 6, 6)).astype(dtype)
    return w, x, rng.standard_normal((2, channels, 6, 6)).astype(dtype)


def _all_ops(w, x, dy):
    kw = dict(padding=1)
    return [knetcnn.conv4(w, x, **kw), knetcnn.conv4x(w, x, dy, **kw), knetcnn.conv4w(w, x, dy, **kw)]


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, 1e306])
@pytest.mark.parametrize("where", ["w", "x", "dy"])
def test_operands_that_could_spoil_or_overflow_an_intermediate_take_im2col(monkeypatch, transforms, special, where):
    """inf - inf in a transform would put NaN in outputs that never read the inf, and 1e306 * 1e0
    sums could overflow inside a transform where the plain sum does not: im2col keeps the formula's
    results, which these must equal exactly."""
    w, x, dy = _operands()
    {"w": w, "x": x, "dy": dy}[where][0, 0, 1, 1] = special
    with np.errstate(all="ignore"):
        force_conv_path(monkeypatch, "im2col")
        expect = _all_ops(w, x, dy)
        force_conv_path(monkeypatch, "winograd")
        got = _all_ops(w, x, dy)
    # The one direction whose operands are all in range keeps the transforms.
    kept = {"w": "conv4w", "x": "conv4x", "dy": "conv4"}[where]
    for op, g, e in zip(("conv4", "conv4x", "conv4w"), got, expect):
        if op == kept:
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * np.abs(e).max())
        else:
            np.testing.assert_array_equal(g, e)
    assert transforms["output"] == (kept != "conv4w")
    assert transforms["gradient"] == (kept == "conv4w")


def test_in_range_bounds_every_intermediate():
    a, b = np.full(3, -1e153), np.full(3, 1e153)
    assert _winograd.in_range(a / 1e10, b, terms=100, growth=81)  # 1e296 * 8100 < max / 2
    assert not _winograd.in_range(a, b, terms=100, growth=81)  # 1e306 * 8100 could overflow
    assert not _winograd.in_range(np.array([1.0, np.nan]), b, terms=1, growth=1)
    assert _winograd.in_range(np.zeros(0), b, terms=1, growth=1)  # no values: nothing to overflow


def test_which_convolutions_it_takes(monkeypatch, transforms):
    force_conv_path(monkeypatch, "im2col")
    monkeypatch.setattr(_winograd, "MIN_CHANNELS", 16)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 16, 8, 8))
    taken = {
        "3x3 stride 1, 16 channels": (rng.standard_normal((16, 16, 3, 3)), {}),
        "padding 2": (rng.standard_normal((16, 16, 3, 3)), dict(padding=2)),
        "8 filters": (rng.standard_normal((8, 16, 3, 3)), {}),
        "stride 2": (rng.standard_normal((16, 16, 3, 3)), dict(stride=2)),
        "dilation 2": (rng.standard_normal((16, 16, 3, 3)), dict(dilation=2)),
        "padding 3": (rng.standard_normal((16, 16, 3, 3)), dict(padding=3)),
        "5x5": (rng.standard_normal((16, 16, 5, 5)), {}),
        "3x2": (rng.standard_normal((16, 16, 3, 2)), {}),
    }
    used = {}
    for name, (w, kw) in taken.items():
        before = transforms["output"]
        knetcnn.conv4(w, x, **kw)
        used[name] = transforms["output"] > before
    assert used == {"3x3 stride 1, 16 channels": True, "padding 2": True, "8 filters": False, "stride 2": False,
                    "dilation 2": False, "padding 3": False, "5x5": False, "3x2": False}  # fmt: skip
    before = transforms["input"]
    w = rng.standard_normal((16, 16, 3, 3))
    for dtype in (np.float16, np.float32):  # float16 computes in float32 through im2col's conversions
        knetcnn.conv4(w.astype(dtype), x.astype(dtype))
    assert transforms["input"] == before + 1


def test_scratch_stays_within_the_memory_budget(monkeypatch, transforms):
    """Blocks of items shrink to fit _chunks' budget; where one item alone would not fit, im2col
    (which cuts an item into rows) takes the call."""
    from knetcnn.cpu import _chunks

    force_conv_path(monkeypatch, "winograd")
    rng = np.random.default_rng(7)
    w, x = rng.standard_normal((4, 4, 3, 3)), rng.standard_normal((6, 4, 10, 10))
    expect = knetcnn.conv4(w, x, padding=1)
    one_item = 8 * 16 * ((4 + 4) * 25 + 2 * 4 * 4)  # 25 tiles of 2x2 over a 10 x 10 result
    sizes = []

    def recording_input(x, v, *rest, **kw):
        sizes.append(v.shape[2])  # tiles in this block
        return core.winograd_input(x, v, *rest, **kw)

    monkeypatch.setattr(_winograd.core, "winograd_input", recording_input)
    monkeypatch.setattr(_chunks, "RESULT_FACTOR", 0)
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", 2 * one_item)
    np.testing.assert_allclose(knetcnn.conv4(w, x, padding=1), expect, rtol=1e-12, atol=1e-12)
    assert sizes == [50, 50, 50]  # two items a block, not TILES_PER_BLOCK's six
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", one_item - 1)
    calls = transforms["output"]
    np.testing.assert_allclose(knetcnn.conv4(w, x, padding=1), expect, rtol=1e-12, atol=1e-12)
    assert transforms["output"] == calls  # im2col took it


# The three directions on one set of operands, for the layout test below.
_CONV_OPS = (
    lambda w, x, dy: knetcnn.conv4(w, x, padding=1),
    lambda w, x, dy: knetcnn.conv4x(w, x, dy, padding=1),
    lambda w, x, dy: knetcnn.conv4w(w, x, dy, padding=1),
)


def test_strided_operands_are_copied_a_block_at_a_time(monkeypatch):
    """A Fortran-order or reversed x or dy reaches the transforms as C-contiguous copies of one
    block of items each, never as slices of a whole copy: conv4w's result is only the filters,
    so a whole copy of x could be many times the memory budget."""
    force_conv_path(monkeypatch, "winograd")
    monkeypatch.setattr(_winograd, "TILES_PER_BLOCK", 50)  # two 10 x 10 items a block
    seen = []

    def recording(name):
        real = getattr(core, name)

        def call(a, *rest, **kw):
            seen.append((a.shape[0], (a if a.base is None else a.base).nbytes, a.nbytes, a.flags.c_contiguous))
            return real(a, *rest, **kw)

        return call

    for name in ("winograd_input", "winograd_gradient"):
        monkeypatch.setattr(_winograd.core, name, recording(name))
    rng = np.random.default_rng(8)
    w, x = rng.standard_normal((16, 16, 3, 3)), np.asfortranarray(rng.standard_normal((6, 16, 10, 10)))
    dy = rng.standard_normal((6, 16, 10, 10))[:, :, ::-1]
    expect = [op(w, np.ascontiguousarray(x), np.ascontiguousarray(dy)) for op in _CONV_OPS]  # C-order twins
    for op, want in zip(_CONV_OPS, expect):
        seen.clear()
        np.testing.assert_allclose(op(w, x, dy), want, rtol=1e-12, atol=1e-12)
        assert seen and all(items == 2 and held == size and contiguous for items, held, size, contiguous in seen), seen


def test_float16_results_match_the_reference_within_float16(monkeypatch):
    force_conv_path(monkeypatch, "winograd")
    rng = np.random.default_rng(6)
    w, x = rng.standard_normal((4, 2, 3, 3)).astype(np.float16), rng.standard_normal((1, 2, 5, 4)).astype(np.float16)
    import reference

    ref, mag = reference.conv4(w, x, padding=1, magnitude=True)
    assert_close(knetcnn.conv4(w, x, padding=1), ref, mag, np.float16, "float16 conv4")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: core.winograd_input(np.zeros((1, 2, 4, 4)), np.zeros((16, 2, 4)), 2, 2, 3, 0, False),
         "top and left must be in [0, 2]"),
        (lambda: core.winograd_input(np.zeros((1, 2, 4, 4)), np.zeros((16, 2, 5)), 2, 2, 0, 0, False),
         "v must be (16, 2, 4), got (16, 2, 5)"),
        (lambda: core.winograd_input(np.zeros((1, 2, 4, 4)), np.zeros((16, 2, 4, 1)), 2, 2, 0, 0, False),
         "v must be 3-D, got 4-D"),
        (lambda: core.winograd_output(np.zeros((16, 2, 4)), np.zeros((1, 2, 5, 4)), False),
         "m must be (16, 2, 6), got (16, 2, 4)"),
        (lambda: core.winograd_output(np.zeros((16, 2, 4)), np.zeros((1, 2, 8, 4))[:, :, ::2], False),
         "y must be C-contiguous"),
        (lambda: core.winograd_gradient(np.zeros((1, 2, 4, 4)), np.zeros((16, 2, 4), np.float32), False),
         "g must have x's dtype, got float32"),
        (lambda: core.winograd_gradient(np.zeros((1, 2, 4, 4), np.int64), np.zeros((16, 2, 4)), False),
         "winograd_gradient: dy must be float32 or float64, got int64"),
        (lambda: core.winograd_input(np.zeros((1, 2, 4, 4)), np.zeros((16, 2, 4)), -1, 2, 0, 0, False),
         "sizes must be >= 0"),
    ],
)
def test_binding_refuses_malformed_arrays(call, message):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert message in str(info.value)
    assert str(info.value).startswith("winograd_")
