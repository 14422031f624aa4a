"""The compiled pooling kernels at their edges: rows longer than a scratch tile, bands of many
rows, many planes split over threads and stacked groups, planes of zero, misaligned input and
windows whose product overflows int64. The loop reference (or, for large inputs, an independent
NumPy formulation of 2x2 pooling) is the judge."""

import os
import signal
import time
import warnings

import numpy as np
import pytest

import knetcnn
import reference
from knetcnn._core import core

# Scratch per thread holds this many windows (csrc/core/cpu_pool.cpp, kScratchWindows).
SCRATCH_WINDOWS = 1 << 14


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("shape,kw", [
    ((1, 2, 3 * SCRATCH_WINDOWS // 2), dict(window=3, stride=1, padding=1)),  # 1-D rows over several tiles
    ((1, 1, 200, 150), dict(window=3, stride=1, padding=1)),  # interior rows in several bands
    ((1, 1, 7, 3 * SCRATCH_WINDOWS // 2), dict(window=(1, 2), stride=(1, 2))),  # tiles of 2-wide pairs, several rows
])  # fmt: skip
def test_tiles_and_bands_match_reference(shape, kw, mode):
    rng = np.random.default_rng(3)
    x = rng.integers(-4, 5, shape).astype(np.float64)  # ties
    x[rng.random(shape) < 0.001] = np.nan
    y = knetcnn.pool(x, mode=mode, **kw)
    np.testing.assert_allclose(y, reference.pool(x, mode=mode, **kw), rtol=1e-14, equal_nan=True)
    dy = rng.standard_normal(y.shape)
    got = knetcnn.poolx(x, y, dy, mode=mode, **kw)
    np.testing.assert_allclose(got, reference.poolx(x, y, dy, mode=mode, **kw), rtol=1e-13, atol=1e-13)


def _pool_2x2_by_reshape(x):
    """Independent 2x2 max pooling of an (N, C, 2H, 2W) array and its first-max gradient routing."""
    n, c, h, w = x.shape
    cells = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = np.argmax(cells, axis=-1)  # the first maximum in row-major window order
    y = np.take_along_axis(cells, first[..., None], -1)[..., 0]

    def gradient(dy):
        routed = np.zeros_like(cells)
        np.put_along_axis(routed, first[..., None], dy[..., None], -1)
        return routed.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)

    return y, gradient


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_planes_over_threads_and_stacked_groups(dtype):
    # 1500 planes of 16 x 16: more work than one thread takes, stacked groups with a partial last one.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 500, 16, 16)).astype(dtype)
    expect_y, gradient = _pool_2x2_by_reshape(x)
    np.testing.assert_array_equal(knetcnn.pool(x), expect_y)
    dy = rng.standard_normal(expect_y.shape).astype(dtype)
    np.testing.assert_array_equal(knetcnn.poolx(x, expect_y, dy), gradient(dy))
    # The same through the general kernels (3x3 windows, stride 2, padding 1) against the loop
    # reference on a slice: the planes are independent, so any slice must agree.
    kw = dict(window=3, stride=2, padding=1)
    y = knetcnn.pool(x, **kw)
    np.testing.assert_allclose(y[:, :7], reference.pool(x[:, :7], **kw), rtol=1e-6)
    got = knetcnn.poolx(x, y, np.ones_like(y), **kw)
    np.testing.assert_allclose(got[:, 490:], reference.poolx(x[:, 490:], y[:, 490:], np.ones_like(y[:, 490:]), **kw), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_beyond_the_caches_route_every_window(dtype):
    # x of at least 4 MiB (cpu_pool_rows.cpp, traffic_for_2x2_backward): the 2x2 backward
    # prefetches ahead of its rows. Odd planes (AlexNet's 227 x 227 stem, smaller) leave a last row and column that
    # no window covers; ties and NaN windows take the careful route.
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, 8, 301, 301)).astype(dtype)
    x[0, 3, 100, 51] = np.nan
    assert x.nbytes >= 4 << 20
    dy = rng.standard_normal((2, 8, 150, 150)).astype(dtype)
    y = knetcnn.pool(x)
    expect_y, gradient = _pool_2x2_by_reshape(x[:, :, :300, :300])  # argmax: the first NaN or maximum
    np.testing.assert_array_equal(y, expect_y)
    assert np.isnan(y[0, 3, 50, 25])
    got = knetcnn.poolx(x, y, dy)
    expect = np.zeros_like(x)
    expect[:, :, :300, :300] = gradient(dy)
    assert expect[0, 3, 100, 51] == dy[0, 3, 50, 25]  # the NaN cell takes its window's share
    np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_outgrowing_half_the_cache_stream_dx_and_route_every_window(dtype):
    # x, dx and dy of 21 MB: past half of a 32 MiB last-level cache (up to 40 MiB), so the 2x2
    # backward writes dx with streaming stores, on rows of 184 cells (32-byte aligned). float32's
    # 92 windows a row end in an overlapping step that stores plainly. Ties and a NaN window too.
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, (16 // np.dtype(dtype).itemsize, 16, 200, 184)).astype(dtype)
    assert x.nbytes * 9 // 4 > 16 << 20  # x, dx and a quarter-size dy
    x[1, 5, 17, 33] = np.nan
    expect_y, gradient = _pool_2x2_by_reshape(x)
    y = knetcnn.pool(x)
    np.testing.assert_array_equal(y, expect_y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = knetcnn.poolx(x, y, dy, alpha=2.0)
    np.testing.assert_array_equal(got, gradient(dy) * dtype(2))
    assert got[1, 5, 17, 33] == 2 * dy[1, 5, 8, 16]  # the NaN cell takes its window's share


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_pools_on_its_own_threads():
    # The kernels' worker threads exist in the parent only: a child forked after they ran must
    # start its own (not wait forever on the parent's) and get the same results.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 32, 32)).astype(np.float32)  # enough work for every thread
    expect_y, gradient = _pool_2x2_by_reshape(x)
    dy = rng.standard_normal(expect_y.shape).astype(np.float32)
    np.testing.assert_array_equal(knetcnn.poolx(x, expect_y, dy), gradient(dy))  # the parent's pool runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: this is the case tested
        pid = os.fork()
    if pid == 0:  # the child: exit status 0 if both results are right
        ok = np.array_equal(knetcnn.poolx(x, expect_y, dy), gradient(dy)) and np.array_equal(knetcnn.pool(x), expect_y)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if done == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in pooling")
    assert os.waitstatus_to_exitcode(done[1]) == 0, "the forked child got wrong pooling results"


def test_zero_planes_give_empty_results_without_touching_memory():
    # The public API refuses empty arrays (semantics.md §2); the compiled functions must not crash on them.
    g = core.pool_geometry("pool", (1, 1, 8, 8), window=2, padding=0, stride=None, mode=0, nan_opt=1)
    assert core.cpu_pool_forward(g, np.empty((0, 1, 8, 8)), 0, 1.0, -1.0).shape == (0, 1, 4, 4)
    assert core.cpu_max_pool_backward(g, np.empty((2, 0, 8, 8)), np.empty((2, 0, 4, 4)), 1.0).shape == (2, 0, 8, 8)
    assert core.cpu_average_pool_backward(g, np.empty((0, 3, 4, 4)), 1, 1.0).shape == (0, 3, 8, 8)


def test_misaligned_input_is_copied_by_the_backend_and_refused_by_the_kernels():
    rng = np.random.default_rng(5)
    raw = np.zeros(8 * 2 * 3 * 8 * 8 + 1, np.uint8)
    x = raw[1:].view(np.float64).reshape(2, 3, 8, 8)  # one byte off: misaligned, writeable
    assert not x.flags.aligned and x.flags.c_contiguous
    x[...] = rng.standard_normal(x.shape)
    aligned = np.array(x)
    np.testing.assert_array_equal(knetcnn.pool(x, window=3, padding=1), knetcnn.pool(aligned, window=3, padding=1))
    y = knetcnn.pool(x)
    np.testing.assert_array_equal(knetcnn.poolx(x, y, np.ones_like(y)), knetcnn.poolx(aligned, y, np.ones_like(y)))
    g = core.pool_geometry("pool", x.shape, window=2, padding=0, stride=None, mode=0, nan_opt=1)
    with pytest.raises(ValueError, match="x is not aligned"):
        core.cpu_pool_forward(g, x, 0, 1.0, -1.0)


def test_average_divisor_beyond_int64():
    # prod(window) = 2**64: an int64 product would overflow; mode 1 divides by it.
    kw = dict(window=(2**21, 2**21, 2**22), padding=(2**20, 2**20, 2**21), mode=1)
    y = knetcnn.pool(np.ones((1, 1, 1, 1, 1)), **kw)
    assert y.item() == 2.0**-64
    dx = knetcnn.poolx(np.ones((1, 1, 1, 1, 1)), y, np.ones_like(y), **kw)
    assert dx.item() == 2.0**-64
