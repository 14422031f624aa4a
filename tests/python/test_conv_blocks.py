"""The CPU convolution's blocks and compiled im2col / col2im: cut into tiny blocks (single items,
single output rows whose input rows overlap) the result equals one block's and the reference's,
for the conv4 and the deconv4 families;
inputs the kernels cannot read in place (float16, non-contiguous, misaligned) go through a
converted copy of just the rows a block reads; non-finite values stay where the formula puts them;
the kernels' own arguments are checked before any memory is touched."""

import functools

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import knetcnn
import reference
from cases import DTYPES, assert_close, check_family_against_reference, deconv_config, force_conv_path, normal
from knetcnn._core import core
from knetcnn.cpu import _chunks, _conv_blocks


@pytest.fixture(autouse=True)
def im2col_only(monkeypatch):
    """These tests are about im2col's blocks: no convolution here takes the direct kernel."""
    force_conv_path(monkeypatch, "im2col")


def use_tiny_blocks(monkeypatch):
    """Blocks of one item, of one output row where an item is more than 256 bytes, and of a few
    of a row's positions where the row is more than that."""
    for name, value in (("TARGET_BYTES", 256), ("MIN_BUDGET_BYTES", 256), ("RESULT_FACTOR", 0)):
        monkeypatch.setattr(_chunks, name, value)
    monkeypatch.setattr(_conv_blocks, "MIN_COLUMNS", 0)


def _three_ops(w, x, dy, kw):
    return [knetcnn.conv4(w, x, **kw), knetcnn.conv4x(w, x, dy, **kw), knetcnn.conv4w(w, x, dy, **kw)]


@pytest.mark.parametrize("d", [1, 2, 3])
def test_small_blocks_give_the_result_of_one_block(monkeypatch, d):
    rng = np.random.default_rng([79, d])
    w = rng.standard_normal((4, 3) + (3,) * d)
    x = rng.standard_normal((3, 6) + (7, 6, 5)[:d])
    kw = dict(padding=(1, 0, 2)[:d], dilation=(1, 2, 1)[:d], stride=(2, 1, 1)[:d], group=2, alpha=0.5)
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    whole = _three_ops(w, x, dy, kw)
    use_tiny_blocks(monkeypatch)
    for got, expect in zip(_three_ops(w, x, dy, kw), whole):
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)


@functools.lru_cache(maxsize=None)
def _many_output_filter_cases():
    """conv4w problems with more than THIN_OUTPUTS outputs per group (so their products are not
    cut into pieces), with the loop reference's dw, computed once."""
    rng = np.random.default_rng(83)
    cases = []
    for w_shape, x_shape, kw in [
        ((9, 24, 5, 5), (2, 24, 7, 6), dict(padding=1, mode=0, alpha=0.5)),  # 9 x 600 outputs
        ((16, 20, 3, 3, 3), (1, 40, 4, 5, 4), dict(group=2, stride=(1, 2, 1))),  # 8 x 540 per group
        ((5, 120, 7), (2, 120, 20), dict(dilation=2, mode=1, alpha=-1.0)),  # 1-D: 5 x 840
    ]:
        w, x = rng.standard_normal(w_shape), rng.standard_normal(x_shape)
        dy = rng.standard_normal(reference.conv4(w, x, **kw).shape)
        cases.append((w, x, dy, kw, reference.conv4w(w, x, dy, **kw)))
    return cases


@pytest.mark.parametrize("orientation", ["filters first", "transposed"])
@pytest.mark.parametrize("blocks", ["whole", "tiny"])
def test_backward_filter_products_in_either_orientation_match_reference(monkeypatch, orientation, blocks):
    """conv4w's product runs as (Og, columns) @ (columns, Cg*K), or transposed (float32, few
    filters); both orientations, summed over blocks, give the loop reference's dw."""
    from knetcnn.cpu import conv

    monkeypatch.setattr(conv, "TRANSPOSED_BELOW_FILTERS", 0 if orientation == "filters first" else 1 << 30)
    if blocks == "tiny":
        use_tiny_blocks(monkeypatch)
    for w, x, dy, kw, expect in _many_output_filter_cases():
        assert w.shape[0] // kw.get("group", 1) * np.prod(w.shape[1:]) > conv.THIN_OUTPUTS
        for dtype in ("float64", "float32"):
            got = knetcnn.conv4w(w.astype(dtype), x.astype(dtype), dy.astype(dtype), **kw)
            tol = 1e-10 if dtype == "float64" else 2e-4
            np.testing.assert_allclose(got, expect, rtol=tol, atol=tol * np.abs(expect).max(), err_msg=f"{w.shape} {kw} {dtype}")
            assert got.dtype == dtype and got.flags.c_contiguous


@pytest.mark.parametrize("blocks", ["whole", "tiny"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_backward_filter_item_by_item_matches_reference(monkeypatch, blocks, d):
    """conv4w with few sums and long items reads dy in place, one product per item and group;
    summed over items and blocks it gives the loop reference's dw, for dy in any layout."""
    from knetcnn.cpu import conv

    monkeypatch.setattr(conv, "MIN_ITEM_POSITIONS", 1)  # these small shapes take the per-item path
    if blocks == "tiny":
        use_tiny_blocks(monkeypatch)
    products = []
    by_items = conv._add_product_by_items
    monkeypatch.setattr(conv, "_add_product_by_items", lambda *a: products.append(1) or by_items(*a))
    rng = np.random.default_rng([83, d])
    for group, strided_dy in ((1, False), (2, False), (1, True)):
        w = rng.standard_normal((2 * group, 3) + (3,) * d)
        x = rng.standard_normal((3, 3 * group) + (7,) * d)
        kw = dict(padding=1, stride=(2,) + (1,) * (d - 1), mode=int(rng.integers(2)), group=group, alpha=-0.5)
        dy = rng.standard_normal(reference.conv4(w, x, **kw).shape)
        expect = reference.conv4w(w, x, dy, **kw)
        for dtype in ("float64", "float32"):
            dy_in = dy.astype(dtype)
            if strided_dy:
                dy_in = np.repeat(dy_in, 2, axis=-1)[..., ::2]
            products.clear()
            got = knetcnn.conv4w(w.astype(dtype), x.astype(dtype), dy_in, **kw)
            tol = 1e-12 if dtype == "float64" else 1e-5
            np.testing.assert_allclose(got, expect, rtol=tol, atol=tol * np.abs(expect).max(), err_msg=f"{group} {dtype}")
            assert products or strided_dy, "per-item products did not run"


def _strided_conv_config(rng):
    d = int(rng.integers(1, 4))
    k = rng.integers(1, (0, 5, 4, 3)[d], d)
    s, dil, p = rng.integers(1, 4, d), rng.integers(1, 3, d), rng.integers(0, 3, d)
    group = int(rng.choice([1, 2]))
    span = (k - 1) * dil + 1
    x = np.maximum(1, span - 2 * p) + rng.integers(0, (0, 9, 7, 4)[d], d)
    kw = dict(padding=tuple(int(v) for v in p), stride=tuple(int(v) for v in s),
              dilation=tuple(int(v) for v in dil), mode=int(rng.integers(2)), group=group,
              alpha=float(rng.choice([1.0, -0.5])))  # fmt: skip
    w_shape = (group * int(rng.integers(1, 3)), int(rng.integers(1, 3))) + tuple(int(v) for v in k)
    x_shape = (int(rng.integers(1, 3)), group * w_shape[1]) + tuple(int(v) for v in x)
    return w_shape, x_shape, kw


def _unusual_layout(rng, a):
    """a, or the same values in a layout the kernels cannot or need not read as is."""
    kind = rng.integers(4)
    if kind == 1:  # non-contiguous: every other element of a larger array
        big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == 2:  # reversed last axis (negative strides)
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if kind == 3 and a.dtype.itemsize > 1:  # misaligned
        raw = np.empty(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
        raw[...] = a
        return raw
    return a


@pytest.mark.parametrize("gather", ["converted", "by offsets"])
@pytest.mark.parametrize("blocks", ["whole", "tiny"])
def test_strided_and_unusual_inputs_match_reference(monkeypatch, blocks, gather):
    """Input the kernels cannot read in place is gathered from a converted copy of the cells a
    block reads, or from x one kernel offset at a time (where most of those cells are skipped)."""
    if blocks == "tiny":
        use_tiny_blocks(monkeypatch)
    monkeypatch.setattr(_conv_blocks, "CONVERT_AT_MOST", 1 << 62 if gather == "converted" else 0)
    rng = np.random.default_rng(103)
    for _ in range(40):
        w_shape, x_shape, kw = _strided_conv_config(rng)
        dtype = DTYPES[rng.integers(3)]
        w, x = normal(rng, w_shape, dtype), normal(rng, x_shape, dtype)
        ref, mag = reference.conv4(w, x, magnitude=True, **kw)
        what = f"{w_shape} {x_shape} {kw} {dtype.__name__}"
        assert_close(knetcnn.conv4(w, _unusual_layout(rng, x), **kw), ref, mag, dtype, "conv4 " + what)
        dy = normal(rng, ref.shape, dtype)
        ref, mag = reference.conv4x(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4x(w, x, _unusual_layout(rng, dy), **kw), ref, mag, dtype, "conv4x " + what)
        ref, mag = reference.conv4w(w, x, dy, magnitude=True, **kw)
        got = knetcnn.conv4w(w, _unusual_layout(rng, x), _unusual_layout(rng, dy), **kw)
        assert_close(got, ref, mag, dtype, "conv4w " + what)


@pytest.mark.parametrize("blocks", ["whole", "tiny"])
@pytest.mark.parametrize(
    "w_shape,x_shape,kw",
    [
        ((4, 3, 3, 11), (2, 3, 9, 74), dict(stride=(2, 4), padding=(1, 2))),  # AlexNet-like stem
        ((3, 2, 8), (2, 2, 90), dict(stride=3, dilation=2, padding=4)),  # 1-D, dilated
        ((2, 2, 2, 3, 7), (1, 2, 3, 4, 50), dict(stride=(1, 1, 2), padding=(0, 1, 3))),  # 3-D, 7-wide stride 2
    ],
)
def test_wide_strided_kernels_match_reference(monkeypatch, blocks, w_shape, x_shape, kw):
    """Kernels at least twice as wide as their stride, over rows longer than 16 outputs (the
    kernels' run-time-length strided copies and adds)."""
    if blocks == "tiny":
        use_tiny_blocks(monkeypatch)
    rng = np.random.default_rng(109)
    for dtype in (np.float64, np.float32):
        w, x = normal(rng, w_shape, dtype), normal(rng, x_shape, dtype)
        ref, mag = reference.conv4(w, x, magnitude=True, **kw)
        assert ref.shape[-1] > 16
        assert_close(knetcnn.conv4(w, x, **kw), ref, mag, dtype, f"conv4 {kw}")
        dy = normal(rng, ref.shape, dtype)
        ref, mag = reference.conv4x(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4x(w, x, dy, **kw), ref, mag, dtype, f"conv4x {kw}")
        ref, mag = reference.conv4w(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4w(w, x, dy, **kw), ref, mag, dtype, f"conv4w {kw}")


@pytest.mark.parametrize("blocks", ["whole", "tiny"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_deconv_family_in_blocks_matches_reference(monkeypatch, blocks, d):
    """deconv4 runs as backward-data over a result that output_padding makes larger than conv4
    would need: the rows no kernel position reaches stay zero, in any blocking."""
    if blocks == "tiny":
        use_tiny_blocks(monkeypatch)
    rng = np.random.default_rng([107, d])
    checked = 0
    while checked < 8:
        cfg = deconv_config(rng)
        if len(cfg["x"]) - 2 != d:
            continue
        checked += 1
        check_family_against_reference("deconv4", rng, cfg)


@pytest.mark.parametrize("padding", [0, 1])
def test_non_finite_values_stay_where_the_formula_puts_them(padding):
    rng = np.random.default_rng(73)
    w = rng.standard_normal((2, 3, 3, 2))
    x = rng.standard_normal((2, 3, 6, 7))
    w[1, 2, 0, 1] = np.inf
    x[0, 1, 2, 6] = -np.inf
    kw = dict(padding=padding, mode=1)
    y = knetcnn.conv4(w, np.nan_to_num(x, neginf=0.0), **kw)
    dy = rng.uniform(0.5, 1.5, y.shape)  # no zeros: inf * 0 must come only from padding, if at all
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
    return _conv_blocks.ConvShape(
        knetcnn._geometry.conv("conv4", w, x, padding=padding, stride=stride, dilation=1, mode=1, group=1)
    )


@pytest.mark.parametrize(
    "w,x,kw",
    [
        ((20, 1, 5, 5), (64, 1, 28, 28), {}),
        ((50, 20, 5, 5), (64, 20, 12, 12), {}),
        ((64, 64, 3, 3), (8, 64, 56, 56), dict(padding=1)),
        ((256, 256, 3, 3), (8, 256, 14, 14), dict(padding=1)),
        ((96, 3, 11, 11), (8, 3, 227, 227), dict(stride=4)),
    ],
)
def test_benchmark_shapes_get_wide_enough_blocks_within_budget(w, x, kw):
    cv = _shape(w, x, **kw)
    for itemsize in (4, 8):
        result = itemsize * int(np.prod(cv.output_shape))
        blocks = list(cv.blocks(result, itemsize))
        assert sum(cv.columns(b) for b in blocks) == cv.n * int(np.prod(cv.y))  # a cover
        for b in blocks:
            # plan() evens the blocks out, which may cut them down to half of what was asked.
            assert cv.columns(b) >= min(_conv_blocks.MIN_COLUMNS, cv.n * int(np.prod(cv.y))) // 2
            assert cv.columns(b) * cv.c * cv.kp * itemsize <= _chunks.budget(result)


KERNEL_ARGS = dict(kernel=(1, 3, 3), stride=(1, 1, 1), dilation=(1, 1, 1), padding=(0, 1, 1), origin=(0, 0, 0),
                   out_begin=(0, 0, 0), out_end=(1, 4, 5), parallel=False)  # fmt: skip


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda x, col: core.im2col(x[0], col, **KERNEL_ARGS), ValueError, "x must be 5-D"),
        (lambda x, col: core.im2col(x, col[:, :-1], **KERNEL_ARGS), ValueError, "col must be C-contiguous"),
        (lambda x, col: core.im2col(x, col[:-1], **KERNEL_ARGS), ValueError, "col has 340 elements, the window needs 360"),
        (lambda x, col: core.im2col(x, col.astype(np.float32), **KERNEL_ARGS), ValueError, "same dtype"),
        (lambda x, col: core.im2col(x.astype(np.int64), col, **KERNEL_ARGS), TypeError, "float32 or float64"),
        (lambda x, col: core.im2col(x, np.broadcast_to(col, col.shape), **KERNEL_ARGS), ValueError, "writeable"),
        (lambda x, col: core.im2col(x, col, **dict(KERNEL_ARGS, stride=(1, 0, 1))), ValueError, "stride"),
        (lambda x, col: core.im2col(x, col, **dict(KERNEL_ARGS, out_end=(1, 4, 2**62))), ValueError, "overflow"),
        (lambda x, col: core.col2im(col, np.broadcast_to(x, x.shape), **KERNEL_ARGS), ValueError, "dx must be writeable"),
        (lambda x, col: core.col2im(col, as_strided(np.zeros(5), x.shape, (0, 0, 0, 0, 8)), **KERNEL_ARGS),
         ValueError, "dx must not overlap itself"),  # fmt: skip
        (lambda x, col: core.col2im(col, x.view(np.uint8)[..., 1:-7].view(np.float64), **KERNEL_ARGS), ValueError, "aligned"),
    ],
)
def test_kernels_refuse_bad_arguments(call, error, message):
    x = np.ones((1, 2, 1, 4, 5))
    col = np.zeros((2 * 9, 20))
    with pytest.raises(error, match=message):
        call(x, col)


def test_kernels_on_several_threads_match_one_thread():
    """conv.py runs the kernels on one thread (see _conv_blocks.PARALLEL_KERNELS); split across
    parallel_for's threads, with the GIL released, they give the same results."""
    rng = np.random.default_rng(113)
    x = rng.standard_normal((16, 3, 1, 30, 31))
    args = dict(kernel=(1, 5, 5), stride=(1, 1, 2), dilation=(1, 1, 1), padding=(0, 2, 1), origin=(0, 0, 0),
                out_begin=(0, 0, 0), out_end=(1, 30, 15))  # fmt: skip
    cols = [np.empty((3 * 25, 16 * 30 * 15)) for _ in range(2)]
    dxs = [np.zeros_like(x) for _ in range(2)]
    for parallel, col, dx in zip((False, True), cols, dxs):
        core.im2col(x, col, **args, parallel=parallel)
        core.col2im(col, dx, **args, parallel=parallel)
    np.testing.assert_array_equal(cols[0], cols[1])
    np.testing.assert_array_equal(dxs[0], dxs[1])
