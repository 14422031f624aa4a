"""Memory layout: non-contiguous inputs read correctly, blocked (chunked) work gives the same
results as unblocked work, and the scratch of a call stays within its budget."""

import tracemalloc

import numpy as np
import pytest

import knetcnn
from cases import CONV_PATHS, force_conv_path
from knetcnn.cpu import _chunks


def strided_views(a):
    """Views of a's values with other layouts: transposed, strided, reversed."""
    t = np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1)  # same values, transposed strides
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a
    rev = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    fortran = np.asfortranarray(a)
    return {"transposed": t, "strided": big[tuple(slice(None, None, 2) for _ in a.shape)], "reversed": rev, "fortran": fortran}


CALLS = {
    "conv4": lambda w, x, y, kw: knetcnn.conv4(w, x, **kw),
    "conv4x": lambda w, x, y, kw: knetcnn.conv4x(w, x, y, **kw),
    "conv4w": lambda w, x, y, kw: knetcnn.conv4w(w, x, y, **kw),
    "deconv4": lambda w, x, y, kw: knetcnn.deconv4(w, y, **kw),  # w is (C_in, C_out, *K) for y
    "pool": lambda w, x, y, kw: knetcnn.pool(x, window=2, padding=1, stride=1),
    "poolx": lambda w, x, y, kw: knetcnn.poolx(x, x[..., :6, :7], x[..., 1:7, 1:8], window=2, stride=1),
    "unpool": lambda w, x, y, kw: knetcnn.unpool(x, window=2, padding=1),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(CALLS))
def test_non_contiguous_inputs_match_contiguous_copies(op, dtype):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    kw = dict(padding=1, stride=(2, 1), mode=1)
    y = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape).astype(dtype)
    expect = CALLS[op](w, x, y, kw)
    for layout, (wv, xv, yv) in zip(strided_views(w), zip(*(strided_views(a).values() for a in (w, x, y)))):
        assert not (xv.flags.c_contiguous and wv.flags.c_contiguous)
        np.testing.assert_array_equal(CALLS[op](wv, xv, yv, kw), expect, err_msg=layout)


@pytest.mark.parametrize("target,budget", [(1 << 12, 1 << 14), (1 << 10, 1 << 10)])
def test_blocked_work_matches_one_block(monkeypatch, target, budget):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 2, 3, 2, 2))
    x = rng.standard_normal((3, 4, 9, 6, 5))
    kw = dict(padding=(2, 1, 0), stride=(2, 1, 1), dilation=(1, 2, 1), group=2, alpha=1.5)
    y = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    # w also fits deconv4 on y: (C_in, C_out // group, *K) = (6, 2, ...) with group 2.
    dz = rng.standard_normal(knetcnn.deconv4(w, y, **kw).shape)
    ops = [
        lambda: knetcnn.conv4(w, x, **kw),
        lambda: knetcnn.conv4x(w, x, y, **kw),
        lambda: knetcnn.conv4w(w, x, y, **kw),
        lambda: knetcnn.deconv4(w, y, **kw),
        lambda: knetcnn.deconv4x(w, y, dz, **kw),
        lambda: knetcnn.deconv4w(w, y, dz, **kw),
    ]
    whole = [op() for op in ops]
    # Tiny targets and budgets force blocks of batch items and, below one item, of output rows.
    monkeypatch.setattr(_chunks, "TARGET_BYTES", target)
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", budget)
    monkeypatch.setattr(_chunks, "RESULT_FACTOR", 0)
    for op, expect in zip(ops, whole):
        np.testing.assert_allclose(op(), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "batch,shape,per_position,result",
    [(64, (24,), 1000, 10), (3, (100, 7), 10**5, 0), (5, (7, 3), 1, 0), (1, (1,), 10**9, 0),
     (2, (3, 4, 5), 10**6, 0), (2, (3, 40, 5), 10**7, 0), (1, (2, 2, 300), 10**8, 0)],
)  # fmt: skip
def test_plan_covers_everything_once_within_the_limit(monkeypatch, batch, shape, per_position, result):
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", 1 << 28)
    covered = np.zeros((batch,) + shape, int)
    for b in _chunks.plan(batch, shape, per_position, result, target=1 << 20):
        covered[(slice(b.n0, b.n1),) + tuple(slice(*r) for r in b.box)] += 1
        cells = (b.n1 - b.n0) * int(np.prod([end - begin for begin, end in b.box]))
        # Within the target, or one slice along some axis that is itself within the budget, or
        # a single position.
        assert cells * per_position <= max(1 << 28, per_position), (b, cells)
    assert (covered == 1).all()


def test_scratch_stays_within_the_budget(monkeypatch):
    # conv4 whose whole im2col would take ~21 MiB; with a 1 MiB budget the peak must stay near
    # the result plus the input plus one block.
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 16, 3, 3))
    x = rng.standard_normal((8, 16, 48, 48))
    monkeypatch.setattr(_chunks, "TARGET_BYTES", 1 << 20)
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", 1 << 20)
    y_bytes = 8 * 4 * 46 * 46 * 8
    for op in (lambda: knetcnn.conv4(w, x), lambda: knetcnn.conv4x(w, x, np.ones((8, 4, 46, 46)))):
        tracemalloc.start()
        op()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        full_columns = 16 * 9 * 8 * 46 * 46 * 8
        assert peak < 3 * y_bytes + x.nbytes + 4 * (1 << 20), (peak, full_columns)
        assert peak < full_columns / 2


@pytest.mark.parametrize("block", [1, 64, 1 << 12])
def test_blocked_max_pool_gradient_matches_one_block(monkeypatch, block):
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, (3, 5, 9, 8)).astype(np.float64)  # ties
    x[0, 1, 2, 3] = np.nan
    cases = [dict(window=2), dict(window=3, stride=2, padding=1), dict(window=(2, 3), maxpoolingNanOpt=0)]
    results = []
    for kw in cases:
        y = knetcnn.pool(x, **kw)
        results.append((kw, y, rng.standard_normal(y.shape)))
    whole = [knetcnn.poolx(x, y, dy, **kw) for kw, y, dy in results]
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", block)
    strided = np.asfortranarray(x)  # not C-contiguous: converted and run a block of planes at a time
    for (kw, y, dy), expect in zip(results, whole):
        np.testing.assert_array_equal(knetcnn.poolx(strided, y, dy, **kw), expect, err_msg=str(kw))


def test_byte_swapped_and_read_only_inputs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    swapped = x.astype(">f8"), w.astype(">f8")
    for a in (x, w):
        a.flags.writeable = False
    y = knetcnn.conv4(w, x, padding=1)
    got = knetcnn.conv4(swapped[1], swapped[0], padding=1)
    assert got.dtype == np.float64 and got.dtype.isnative
    np.testing.assert_array_equal(got, y)
    np.testing.assert_array_equal(knetcnn.pool(swapped[0], window=3, stride=2), knetcnn.pool(x, window=3, stride=2))
    dy = np.ones(y.shape)
    np.testing.assert_array_equal(knetcnn.conv4w(w, x, dy, padding=1), knetcnn.conv4w(*swapped[::-1], dy.astype(">f8"), padding=1))


def test_long_thin_filter_gradient_in_pieces_matches_one_product():
    from knetcnn.cpu import conv

    rng = np.random.default_rng(9)
    acc, product = np.zeros((2, 3, 4)), np.empty((2, 3, 4))
    a, b = rng.standard_normal((2, 3, 5000)), rng.standard_normal((2, 4, 5000))  # 4 pieces and a rest
    conv._add_product_nt(acc, a, b, product)
    np.testing.assert_allclose(acc, a @ b.transpose(0, 2, 1), rtol=1e-12)
    # Through the API: LeNet's first layer takes this path.
    w, x = rng.standard_normal((20, 1, 5, 5)), rng.standard_normal((8, 1, 28, 28))
    dy = rng.standard_normal((8, 20, 24, 24))
    expect = sum(knetcnn.conv4w(w, x[i : i + 1], dy[i : i + 1]) for i in range(8))
    np.testing.assert_allclose(knetcnn.conv4w(w, x, dy), expect, rtol=1e-10)


def test_pooling_scratch_stays_within_its_blocks(monkeypatch):
    # float16 is pooled in float32: without blocks the padded float32 copy alone is 2x the input.
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 32, 64, 64)).astype(np.float16)
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", 1 << 16)
    kw = dict(window=3, padding=1, stride=2)
    y = knetcnn.pool(x, **kw)
    dy = np.ones_like(y)
    for op in (lambda: knetcnn.pool(x, **kw), lambda: knetcnn.poolx(x, y, dy, **kw), lambda: knetcnn.pool(x, mode=2, **kw)):
        tracemalloc.start()
        result = op()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < result.nbytes + (1 << 20), peak  # the result plus a few small blocks


def test_scratch_kept_between_calls_is_capped(monkeypatch):
    from knetcnn.cpu import _scratch

    force_conv_path(monkeypatch, "im2col")  # the direct kernel needs no scratch
    monkeypatch.setattr(_scratch, "RETAIN_BYTES", 1 << 20)
    rng = np.random.default_rng(11)
    w, x = rng.standard_normal((8, 16, 3, 3)), rng.standard_normal((4, 16, 40, 40))  # columns: 11 MiB
    y = knetcnn.conv4(w, x)
    np.testing.assert_array_equal(knetcnn.conv4(w, x), y)  # reused buffers give the same result
    assert sum(b.nbytes for b in _scratch._local.buffers.values()) <= 1 << 20


@pytest.mark.parametrize("path", CONV_PATHS)
def test_calls_from_several_threads_use_their_own_scratch(monkeypatch, path):
    from concurrent.futures import ThreadPoolExecutor

    force_conv_path(monkeypatch, path)
    rng = np.random.default_rng(12)
    cases = [(rng.standard_normal((6, 3, 3, 3)), rng.standard_normal((2, 3, 20 + i, 17))) for i in range(8)]
    expect = [knetcnn.conv4(w, x, padding=1) for w, x in cases]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda c: knetcnn.conv4(c[0], c[1], padding=1), cases))
            for g, e in zip(got, expect):
                np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_op_reads_byte_swapped_input_as_native(dtype):
    # Byte-swapped input is converted a block at a time as each kernel reads it (never whole
    # first); the results are native and the same bits as for native input.
    rng = np.random.default_rng(12)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    kw = dict(padding=1)
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape).astype(dtype)
    p = rng.standard_normal(knetcnn.pool(x).shape).astype(dtype)
    calls = {
        "conv4": lambda w, x, dy, p: knetcnn.conv4(w, x, **kw),
        "conv4x": lambda w, x, dy, p: knetcnn.conv4x(w, x, dy, **kw),
        "conv4w": lambda w, x, dy, p: knetcnn.conv4w(w, x, dy, **kw),
        "deconv4": lambda w, x, dy, p: knetcnn.deconv4(w.swapaxes(0, 1)[:3], dy[:, :3], **kw),
        "pool": lambda w, x, dy, p: knetcnn.pool(x, mode=2, padding=1),
        "poolx": lambda w, x, dy, p: knetcnn.poolx(x, knetcnn.pool(x), p),
        "unpool": lambda w, x, dy, p: knetcnn.unpool(x),
        "unpoolx": lambda w, x, dy, p: knetcnn.unpoolx(p, knetcnn.unpool(p), x[..., :8, :8]),
    }
    swapped = [a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<")) for a in (w, x, dy, p)]
    assert not any(a.dtype.isnative for a in swapped)
    for op, call in calls.items():
        expect, got = call(w, x, dy, p), call(*swapped)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative, op
        np.testing.assert_array_equal(got, expect, err_msg=op)
