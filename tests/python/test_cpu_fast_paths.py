"""The CPU backend's fast paths, forced on for small shapes and compared with the loop reference:
tiled max pooling and its gradient (stride == window, no padding), the gradient's fallback for
NaN windows and infinite gradients, and the scoped NumPy buffer size."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import DTYPES, assert_close, finite_max, normal, pool_data
from knetcnn.cpu import _chunks, _layout, pool


def _tiled_config(rng):
    d = int(rng.integers(1, 4))
    win = tuple(int(v) for v in rng.integers(1, (5, 4, 3)[d - 1], d))
    # Sizes that windows do not always divide: the uncovered tail must get zero gradient.
    size = tuple(w * int(rng.integers(1, (5, 4, 3)[d - 1])) + int(rng.integers(0, w)) for w in win)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) + size
    kw = dict(window=win, stride=win if rng.random() < 0.5 else None, mode=int(rng.choice([0, 3])),
              maxpoolingNanOpt=int(rng.integers(2)), alpha=float(rng.choice([1.0, 0.5, -2.0])))  # fmt: skip
    return shape, kw


@pytest.mark.parametrize("block", [None, 1])  # one block per call, or one (item, channel) each
def test_tiled_max_pool_and_gradient_match_reference(monkeypatch, block):
    if block is not None:
        monkeypatch.setattr(pool, "TILED_BLOCK_BYTES", block)
    rng = np.random.default_rng(101)
    for _ in range(150):
        shape, kw = _tiled_config(rng)
        dtype = DTYPES[rng.integers(3)]
        x = pool_data(rng, shape, dtype, str(rng.choice(["distinct", "ties", "nan"])))
        if rng.random() < 0.2:
            x[rng.random(shape) < 0.1] = np.inf
        y = knetcnn.pool(x, **kw)
        assert_close(y, reference.pool(x, dtype=dtype, **kw), abs(kw["alpha"]) * finite_max(x), dtype, f"pool {shape} {kw}")
        dy = normal(rng, y.shape, dtype)
        if rng.random() < 0.2:
            dy[rng.random(y.shape) < 0.2] = rng.choice([np.inf, -np.inf])
        got = knetcnn.poolx(x, y, dy, **kw)
        expect = reference.poolx(x, y, dy, dtype=dtype, **kw)
        scale = abs(kw["alpha"]) * np.max(np.abs(dy[np.isfinite(dy)]), initial=0.0)
        assert_close(got, expect, scale, dtype, f"poolx {shape} {kw}", terms=4)


def test_tiled_path_is_taken_and_falls_back_only_where_needed(monkeypatch):
    rng = np.random.default_rng(102)
    x = rng.standard_normal((4, 3, 8, 8))
    x[2, 1, 3, 3] = np.nan  # one channel of one item: only its block takes the general path
    dy = rng.standard_normal((4, 3, 4, 4))
    fallbacks = []
    general = pool._max_backward_block
    monkeypatch.setattr(pool, "_max_backward_block", lambda *a: fallbacks.append(a[1].shape) or general(*a))
    monkeypatch.setattr(pool, "TILED_BLOCK_BYTES", 8 * 64)  # one (item, channel) plane per block
    got = knetcnn.poolx(x, knetcnn.pool(x), dy)
    assert fallbacks == [(1, 1, 8, 8)]
    np.testing.assert_array_equal(got, reference.poolx(x, None, dy))


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 1), (3, 2)])
def test_infinite_gradients_reach_only_their_cell(window, stride):
    x = np.array([[[1.0, 3.0, 2.0, 2.0, 5.0, 4.0, 0.0]]])
    y = knetcnn.pool(x, window=window, stride=stride)
    dy = np.ones_like(y)
    dy[..., 0] = np.inf
    got = knetcnn.poolx(x, y, dy, window=window, stride=stride)
    np.testing.assert_array_equal(got, reference.poolx(x, y, dy, window=window, stride=stride))
    assert not np.isnan(got).any()


def test_unbuffered_rows_restores_the_buffer_size():
    before = np.getbufsize()
    with _layout.unbuffered_rows(1000, 8):
        assert np.getbufsize() == 992
    with _layout.unbuffered_rows(40, 8):  # short rows: left alone
        assert np.getbufsize() == before
    with pytest.raises(RuntimeError), _layout.unbuffered_rows(4000, 4):
        raise RuntimeError
    assert np.getbufsize() == before


def test_block_target_is_read_at_call_time(monkeypatch):
    # plan()'s default target was bound at import, so patching TARGET_BYTES changed nothing.
    whole = list(_chunks.plan(8, 10, 1000, 0))
    monkeypatch.setattr(_chunks, "TARGET_BYTES", 20_000)
    assert len(whole) == 1 and len(list(_chunks.plan(8, 10, 1000, 0))) == 4
