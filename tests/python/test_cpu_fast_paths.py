"""The CPU backend's fast paths, forced on for small shapes and compared with the loop reference:
max pooling and its gradient with windows that tile the input, in one kernel call and in plane
blocks, and infinite gradients."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import DTYPES, assert_close, finite_max, normal, pool_data
from knetcnn.cpu import _chunks, pool


def _tiled_config(rng):
    d = int(rng.integers(1, 4))
    win = tuple(int(v) for v in rng.integers(1, (5, 4, 3)[d - 1], d))
    # Sizes that windows do not always divide: the uncovered tail must get zero gradient.
    size = tuple(w * int(rng.integers(1, (5, 4, 3)[d - 1])) + int(rng.integers(0, w)) for w in win)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) + size
    kw = dict(window=win, stride=win if rng.random() < 0.5 else None, mode=int(rng.choice([0, 3])),
              maxpoolingNanOpt=int(rng.integers(2)), alpha=float(rng.choice([1.0, 0.5, -2.0])))  # fmt: skip
    return shape, kw


@pytest.mark.parametrize("blocked", [False, True])  # one kernel call, or one (item, channel) plane per call
def test_tiled_max_pool_and_gradient_match_reference(monkeypatch, blocked):
    if blocked:
        monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", 1)
    rng = np.random.default_rng(101)
    for _ in range(150):
        shape, kw = _tiled_config(rng)
        dtype = DTYPES[rng.integers(3)]
        x = pool_data(rng, shape, dtype, str(rng.choice(["distinct", "ties", "nan"])))
        if rng.random() < 0.2:
            x[rng.random(shape) < 0.1] = np.inf
        if blocked:
            x = np.asfortranarray(x)  # not C-contiguous: converted plane block by plane block
        y = knetcnn.pool(x, **kw)
        assert_close(y, reference.pool(x, dtype=dtype, **kw), abs(kw["alpha"]) * finite_max(x), dtype, f"pool {shape} {kw}")
        dy = normal(rng, y.shape, dtype)
        if rng.random() < 0.2:
            dy[rng.random(y.shape) < 0.2] = rng.choice([np.inf, -np.inf])
        got = knetcnn.poolx(x, y, dy, **kw)
        expect = reference.poolx(x, y, dy, dtype=dtype, **kw)
        scale = abs(kw["alpha"]) * np.max(np.abs(dy[np.isfinite(dy)]), initial=0.0)
        assert_close(got, expect, scale, dtype, f"poolx {shape} {kw}", terms=4)


class _CountingCore:
    """Stands in for the compiled core in pool.py: counts kernel calls and the planes they got."""

    def __init__(self, real):
        self.real, self.planes = real, []

    def __getattr__(self, name):
        kernel = getattr(self.real, name)

        def counted(g, a, *rest):
            self.planes.append(a.shape[0] * a.shape[1])
            return kernel(g, a, *rest)

        return counted


def test_contiguous_input_takes_one_call_and_other_input_goes_in_plane_blocks(monkeypatch):
    rng = np.random.default_rng(102)
    x = rng.standard_normal((4, 3, 8, 8))
    x[2, 1, 3, 3] = np.nan
    dy = rng.standard_normal((4, 3, 4, 4))
    expect = reference.poolx(x, None, dy)
    counting = _CountingCore(pool.core)
    monkeypatch.setattr(pool, "core", counting)
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", 8 * 64 * 2)  # two (item, channel) planes per block
    np.testing.assert_array_equal(knetcnn.poolx(x, knetcnn.pool(x), dy), expect)
    assert counting.planes == [12, 12]  # pool, poolx: whole arrays, no copies
    counting.planes.clear()
    strided = np.asfortranarray(x)
    np.testing.assert_array_equal(knetcnn.poolx(strided, knetcnn.pool(strided), dy), expect)
    assert sum(counting.planes) == 2 * 12 and max(counting.planes) == 2  # pool and poolx, in blocks
    counting.planes.clear()
    x16, dy16 = x.astype(np.float16), dy.astype(np.float16)
    y16 = knetcnn.pool(x16)
    counting.planes.clear()
    half = knetcnn.poolx(x16, y16, dy16)
    assert half.dtype == np.float16 and sum(counting.planes) == 12 and len(counting.planes) > 1  # in blocks
    np.testing.assert_array_equal(half, reference.poolx(x16, None, dy16, dtype=np.float16))


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 1), (3, 2)])
def test_infinite_gradients_reach_only_their_cell(window, stride):
    x = np.array([[[1.0, 3.0, 2.0, 2.0, 5.0, 4.0, 0.0]]])
    y = knetcnn.pool(x, window=window, stride=stride)
    dy = np.ones_like(y)
    dy[..., 0] = np.inf
    got = knetcnn.poolx(x, y, dy, window=window, stride=stride)
    np.testing.assert_array_equal(got, reference.poolx(x, y, dy, window=window, stride=stride))
    assert not np.isnan(got).any()


def test_block_target_is_read_at_call_time(monkeypatch):
    # plan()'s default target was bound at import, so patching TARGET_BYTES changed nothing.
    whole = list(_chunks.plan(8, (10,), 1000, 0))
    monkeypatch.setattr(_chunks, "TARGET_BYTES", 20_000)
    assert len(whole) == 1 and len(list(_chunks.plan(8, (10,), 1000, 0))) == 4
