"""Pooling input the kernels cannot read in place (float16, strided, reversed, byte-swapped) is
converted a block at a time; a (batch, channel) plane bigger than the block target goes in bands
of rows along its first spatial axis. Banded results are the whole plane's bit for bit, and the
kernels never see much more than the target however big the plane."""

import tracemalloc

import numpy as np
import pytest

import knetcnn
from knetcnn import _geometry
from knetcnn.cpu import _chunks, pool

BAND_TARGET = 256  # bytes: every plane below is many times bigger, so it goes in many bands

GEOMETRIES = [
    ((2, 1, 50), dict(window=3, stride=1, padding=1)),
    ((1, 1, 40000), dict(window=5, stride=1, padding=2)),  # 1-D, past the kernels' tiles of 16 Ki windows
    ((1, 2, 47), dict(window=2, stride=5, padding=1)),  # stride > window: rows no window reads
    ((2, 1, 23, 19), dict(window=3, stride=1, padding=0)),
    ((2, 1, 23, 19), dict(window=3, stride=1, padding=1)),
    ((2, 1, 23, 19), dict(window=3, stride=1, padding=2)),
    ((1, 1, 70, 2000), dict(window=3, stride=1, padding=1)),  # the kernels group rows 8 at a time
    ((1, 1, 60, 3000), dict(window=(3, 2), stride=(2, 1), padding=(1, 0))),  # ... 5 at a time
    ((1, 2, 31, 18), dict(window=(4, 2), stride=(3, 2), padding=(2, 1))),
    ((1, 1, 25, 16), dict(window=(2, 3), stride=(5, 1), padding=(1, 0))),
    ((2, 2, 17, 12), dict(window=2)),  # the fused 2x2 loops, an odd row left over
    ((1, 1, 9, 8, 7), dict(window=(3, 2, 3), stride=(1, 2, 1), padding=(1, 0, 1))),
    ((1, 1, 9, 6, 4), dict(window=2)),  # 3-D pairs, odd first axis: the kernels add, not assign
]

# The dtype of the plain arrays, and a layout of the same values the kernels cannot read in place.
LAYOUTS = {
    "reversed": (np.float64, lambda a: np.ascontiguousarray(a[:, :, ::-1])[:, :, ::-1]),
    "strided": (np.float32, lambda a: np.repeat(a, 2, axis=-1)[..., ::2]),
    "float16": (np.float16, lambda a: a),  # computed in float32: never read in place
}


def _data(rng, shape):
    """Magnitudes over six decades (sums depend on their order), ties, NaN, -0 and inf."""
    a = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape)
    ties = rng.random(shape) < 0.2
    a[ties] = rng.integers(-2, 3, ties.sum())
    specials = (np.nan, -0.0, np.inf)[: a.size]
    a.flat[rng.choice(a.size, len(specials), replace=False)] = specials
    return a


def _four_ops(x, dy, du, kw, nan_opt):
    """pool and poolx of x (dy: pool's output gradient); unpool of dy and unpoolx (du: unpool's
    result gradient)."""
    y = knetcnn.pool(x, maxpoolingNanOpt=nan_opt, **kw)
    return {
        "pool": y,
        "poolx": knetcnn.poolx(x, y, dy, maxpoolingNanOpt=nan_opt, **kw),
        "unpool": knetcnn.unpool(dy, **kw),
        "unpoolx": knetcnn.unpoolx(dy, du, du, **kw),
    }


def assert_same_bits(got, expect, what):
    assert got.dtype == expect.dtype and got.shape == expect.shape, what
    bits = np.dtype(f"u{got.itemsize}")
    differ = got.view(bits) != expect.view(bits)  # NaN where NaN, -0 where -0
    assert not differ.any(), f"{what}: {differ.sum()} of {differ.size} differ, first at {np.argwhere(differ)[0]}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,geometry", GEOMETRIES, ids=[f"{s}-{g}" for s, g in GEOMETRIES])
def test_banded_pooling_matches_whole_planes_bit_for_bit(monkeypatch, shape, geometry, layout):
    rng = np.random.default_rng(list(shape))
    dtype, convert = LAYOUTS[layout]
    x = _data(rng, shape)
    dy = _data(rng, knetcnn.pool(x, **geometry).shape)
    du = _data(rng, knetcnn.unpool(dy, **geometry).shape)
    plain = tuple(a.astype(dtype) for a in (x, dy, du))
    for mode in range(4):
        for nan_opt in (0, 1):
            kw = dict(geometry, mode=mode, alpha=-1.5)
            whole = _four_ops(*plain, kw, nan_opt)  # float16 in blocks of whole planes, the others in one call
            monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", BAND_TARGET)
            banded = _four_ops(*(convert(a) for a in plain), kw, nan_opt)
            monkeypatch.undo()
            for op in whole:
                assert_same_bits(banded[op], whole[op], f"{op} {kw} maxpoolingNanOpt={nan_opt}")


class _Spy:
    """Stands in for the compiled core in pool.py: records the bytes of every array a pooling
    kernel reads or returns; anything else (the band geometries) goes to the real core."""

    def __init__(self, real):
        self.real, self.sizes = real, []

    def __getattr__(self, name):
        function = getattr(self.real, name)
        if not (name.startswith("cpu_") and callable(function)):
            return function

        def spied(g, *args):
            result = function(g, *args)
            self.sizes.append(max(a.nbytes for a in args + (result,) if isinstance(a, np.ndarray)))
            return result

        return spied


@pytest.mark.parametrize(
    "op,kw",
    [
        ("pool", dict(window=4)),
        ("pool", dict(window=3, stride=1, padding=1, mode=2)),
        ("poolx", dict(window=3, stride=1, padding=1)),
        ("poolx", dict(window=2, mode=1)),
        ("unpool", dict(window=4)),
        ("unpoolx", dict(window=3, stride=1, padding=1)),
    ],
)
def test_one_huge_plane_is_converted_in_bands_near_the_target(monkeypatch, op, kw):
    # The target stays above what the kernels group together (16 Ki windows, 64 KiB of float32).
    target = 1 << 17
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 1, 2048, 1024)).astype(np.float16)  # in float32: 8 MiB, 64 targets
    y = knetcnn.pool(x, **kw)
    dy = rng.standard_normal(y.shape).astype(np.float16)
    small = rng.standard_normal((1, 1, 512, 256)).astype(np.float16)  # unpool's x: its result is x's size
    calls = {
        "pool": lambda: knetcnn.pool(x, **kw),
        "poolx": lambda: knetcnn.poolx(x, y, dy, **kw),
        "unpool": lambda: knetcnn.unpool(small, **kw),
        "unpoolx": lambda: knetcnn.unpoolx(y, x, x, **kw),
    }
    expect = calls[op]()
    spy = _Spy(pool.core)
    monkeypatch.setattr(pool, "core", spy)
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", target)
    tracemalloc.start()
    got = calls[op]()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, expect)
    assert len(spy.sizes) > 16 and max(spy.sizes) <= 2 * target, spy.sizes
    assert peak <= got.nbytes + 4 * target, peak  # the converted band, its result, the band's dy


@pytest.mark.parametrize("op", ["pool", "poolx", "unpool", "unpoolx"])
@pytest.mark.parametrize("swapped", [">f2", ">f4", ">f8"])
@pytest.mark.parametrize("target", [1 << 21, BAND_TARGET])  # plane blocks, bands
def test_byte_swapped_input_is_converted_a_block_at_a_time(monkeypatch, op, swapped, target):
    # Through pool.run itself: knetcnn.cpu.run still swaps whole arrays before calling it.
    rng = np.random.default_rng(13)
    native = np.dtype(swapped).newbyteorder("=")
    kw = dict(window=3, padding=1, stride=2, mode=2)
    x = rng.standard_normal((2, 3, 21, 10)).astype(native)
    if op.startswith("unpool"):
        g = _geometry.pool(op, x.shape, transposed=True, **kw)
        arrays = (x, None, rng.standard_normal(g.input_shape).astype(native))
    else:
        g = _geometry.pool(op, x.shape, maxpoolingNanOpt=1, **kw)
        arrays = (x, None, rng.standard_normal(g.output_shape).astype(native))
    expect = pool.run(op, arrays, g, -1.5)
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", target)
    got = pool.run(op, tuple(None if a is None else a.astype(swapped) for a in arrays), g, -1.5)
    assert got.dtype == native and got.dtype.isnative
    assert_same_bits(got, expect, f"{op} {swapped}")


def test_backward_bands_leave_the_kernels_groups_where_those_are_huge(monkeypatch):
    """Overlapping windows at large strides make the kernels' row groups (which keep banded sums
    bit-identical to one plane's) hundreds of MiB; bands then take any rows, within the target."""
    from knetcnn.cpu import _chunks

    rng = np.random.default_rng(31)
    x = rng.standard_normal((1, 1, 700, 200)).astype(np.float16)
    kw = dict(window=(9, 9), stride=(8, 8))
    y = knetcnn.pool(x, **kw)
    dy = rng.standard_normal(y.shape).astype(np.float16)
    expect = knetcnn.poolx(x.astype(np.float32), y.astype(np.float32), dy.astype(np.float32), **kw)
    monkeypatch.setattr(_chunks, "POOL_BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(_chunks, "MIN_BUDGET_BYTES", 256 << 10)  # groups: 64 rows x 8 x 800 B = 400 KiB
    spy = _Spy(pool.core)
    monkeypatch.setattr(pool, "core", spy)
    got = knetcnn.poolx(x, y, dy, **kw)
    np.testing.assert_array_equal(got, expect.astype(np.float16))  # max pooling: no sums to reorder
    assert max(spy.sizes) <= 4 * (16 << 10), max(spy.sizes)
