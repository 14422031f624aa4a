"""Reliability on the CPU backend and the host-side cuDNN paths: threads, repeated calls, memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import knetcnn


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _calls(rng):
    """A mix of every op family on small random problems, with their inputs."""
    w, x = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 3, 9, 9))
    dy = rng.standard_normal((2, 4, 9, 9))
    px = rng.permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8).astype(np.float64)
    py = knetcnn.pool(px, window=3, stride=2, padding=1)
    return [
        ("conv4", (w, x), dict(padding=1, mode=1)),
        ("conv4w", (w, x, dy), dict(padding=1)),
        ("conv4x", (w, x, dy), dict(padding=1)),
        ("deconv4", (w.transpose(1, 0, 2, 3).copy(), dy[:, :3]), dict(stride=2)),
        ("pool", (px,), dict(window=3, stride=2, padding=1, mode=2)),
        ("poolx", (px, py, np.ones_like(py)), dict(window=3, stride=2, padding=1)),
        ("unpool", (px,), dict(window=2, mode=1)),
    ]


def test_concurrent_calls_match_serial_ones():
    cases = [c for seed in range(4) for c in _calls(np.random.default_rng(seed))]
    serial = [getattr(knetcnn, op)(*args, **kw) for op, args, kw in cases]
    results, errors = {}, []

    def worker(t):
        try:
            for rep in range(5):
                for i, (op, args, kw) in enumerate(cases):
                    results[(t, rep, i)] = getattr(knetcnn, op)(*args, **kw)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8 * 5 * len(cases)
    for (t, rep, i), r in results.items():
        # BLAS may split work differently under load: allow last-bit differences, nothing more
        np.testing.assert_allclose(r, serial[i], rtol=1e-13, atol=1e-13, err_msg=f"{cases[i][0]} thread {t}")


def test_ten_thousand_small_calls_do_not_grow_memory():
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((2, 1, 3)), rng.standard_normal((1, 1, 8))
    for _ in range(300):  # warm up caches and allocator pools
        knetcnn.pool(knetcnn.conv4(w, x, padding=1))
    before = rss_bytes()
    for _ in range(5000):
        y = knetcnn.conv4(w, x, padding=1)
        knetcnn.poolx(y, knetcnn.pool(y), np.ones((1, 2, 4)))
    grown = rss_bytes() - before
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls"


def test_descriptors_are_released_after_describe():
    for _ in range(200):
        knetcnn.describe("conv4", (8, 3, 3, 3), (2, 3, 16, 16), padding=1)
    before = rss_bytes()
    for _ in range(5_000):
        knetcnn.describe("conv4", (8, 3, 3, 3), (2, 3, 16, 16))
        knetcnn.describe("pool", (2, 3, 16, 16), window=3)
    grown = rss_bytes() - before
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 descriptor sets"


def test_huge_shapes_are_refused_without_allocating():
    # Zero-stride views have huge logical shapes and no memory behind them: every backend and the
    # descriptors refuse tensors past cuDNN's 2**31 - 1 elements before allocating anything.
    x = np.broadcast_to(np.float32(1), (2**16, 2**16, 4))
    w = np.ones((1, 2**16, 1), np.float32)
    for call in (lambda: knetcnn.describe("conv4", w, x), lambda: knetcnn.conv4(w, x), lambda: knetcnn.pool(x)):
        with pytest.raises(ValueError, match=r"x has shape \(65536, 65536, 4\): a tensor holds at most 2147483647"):
            call()
    # A result past the limit from inputs within it (unpool multiplies sizes by the stride).
    small = np.broadcast_to(np.float32(1), (1, 1, 2**15, 2**15))
    with pytest.raises(ValueError, match=r"unpool: the result would have shape \(1, 1, 65536, 65536\)"):
        knetcnn.unpool(small)
    with pytest.raises(ValueError, match="deconv4: the result would have shape"):
        knetcnn.deconv4(np.ones((1, 1, 2, 2), np.float32), small, stride=2)
