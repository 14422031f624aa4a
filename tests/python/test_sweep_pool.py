"""pool, poolx, unpool, unpoolx against the loop reference: 500 seeded random pool
configurations (every mode, both NaN options, tie-free data, data full of ties, NaN and -inf)
and 500 unpool configurations. Ties are compared exactly: both sides route to the first maximal
cell in row-major order."""

import math

import numpy as np
import pytest

import knetcnn
import reference
from cases import assert_close, finite_max, normal, pool_config, pool_data

CONFIGS = 500
BATCHES = 10


def _window(cfg):
    win = cfg["kwargs"]["window"]
    return math.prod((win,) * (len(cfg["x"]) - 2) if isinstance(win, int) else win)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_pool_and_poolx_match_reference(batch):
    rng = np.random.default_rng([41, batch])
    for _ in range(CONFIGS // BATCHES):
        cfg = pool_config(rng)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        x = pool_data(rng, cfg["x"], dtype, cfg["data"])
        what = f"{cfg}"
        scale = abs(kw["alpha"]) * finite_max(x)

        ref = reference.pool(x, dtype=dtype, **kw)
        y = knetcnn.pool(x, **kw)
        assert_close(y, ref, scale, dtype, "pool " + what, terms=32)

        dy = normal(rng, y.shape, dtype)
        ref = reference.poolx(x, y, dy, dtype=dtype, **kw)
        scale = abs(kw["alpha"]) * finite_max(dy) * _window(cfg)
        assert_close(knetcnn.poolx(x, y, dy, **kw), ref, scale, dtype, "poolx " + what, terms=32)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_unpool_and_unpoolx_match_reference(batch):
    rng = np.random.default_rng([43, batch])
    for _ in range(CONFIGS // BATCHES):
        cfg = pool_config(rng, unpooling=True)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        x = normal(rng, cfg["x"], dtype)
        what = f"{cfg}"
        gain = _window(cfg) ** 2 / abs(kw["alpha"])

        ref = reference.unpool(x, **kw)
        y = knetcnn.unpool(x, **kw)
        assert_close(y, ref, gain * finite_max(x), dtype, "unpool " + what, terms=32)

        dy = normal(rng, y.shape, dtype)
        ref = reference.unpoolx(x, y, dy, **kw)
        assert_close(knetcnn.unpoolx(x, y, dy, **kw), ref, gain * finite_max(dy), dtype, "unpoolx " + what, terms=32)
