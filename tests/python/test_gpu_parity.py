"""GPU tier: cuDNN results against the CPU backend for the same calls, on KnetArray, CuPy and
PyTorch CUDA arrays. Skipped, with the reason, where no GPU is usable.

The CPU backend is itself checked against the loop reference (test_sweep_*); here the GPU must
agree with it within dtype-aware tolerances (cuDNN's algorithms round differently: Winograd and
FFT variants in particular), return the caller's array type, and keep the golden vectors,
adjoint identities and max-pool routing (on tie-free data).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import knetcnn
from cases import assert_close, conv_config, deconv_config, finite_max, normal, pool_config, pool_data
from gpu_arrays import LIBRARIES, expected_type, to_device, to_host
from spec_vectors import VECTORS

pytestmark = pytest.mark.gpu
GPU_TERMS = 4096  # cuDNN's transforms (Winograd, FFT) carry more rounding than a direct sum
CONFIGS = 200


def run_both(lib, op, *arrays, **kw):
    """(GPU result as NumPy, CPU result) for one call; checks the GPU result's type."""
    gpu = getattr(knetcnn, op)(*(to_device(lib, a) for a in arrays), **kw)
    assert isinstance(gpu, expected_type(lib)), f"{op} returned {type(gpu)} for {lib} arrays"
    return to_host(lib, gpu), getattr(knetcnn, op)(*arrays, **kw)


def compare(lib, op, arrays, kw, dtype, what):
    ours, cpu = run_both(lib, op, *arrays, **kw)
    scale = max(finite_max(cpu), 1.0) * max(1.0, float(np.prod(arrays[0].shape[1:])) ** 0.5)
    assert_close(ours, cpu, scale, dtype, f"{lib} {op} {what}", terms=GPU_TERMS)


# (forward op, config generator, seed): the gradient calls are the forward's name + "x" / "w".
CONV_FAMILIES = [("conv4", conv_config, 7), ("deconv4", deconv_config, 8)]


@pytest.mark.parametrize("forward, make_config, seed", CONV_FAMILIES, ids=[f[0] for f in CONV_FAMILIES])
@pytest.mark.parametrize("lib", LIBRARIES)
def test_convolution_families_match_cpu(lib, forward, make_config, seed):
    rng = np.random.default_rng(seed)
    for _ in range(CONFIGS):
        cfg = make_config(rng)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        w, x = normal(rng, cfg["w"], dtype), normal(rng, cfg["x"], dtype)
        dy = normal(rng, getattr(knetcnn, forward)(w, x, **kw).shape, dtype)
        compare(lib, forward, (w, x), kw, dtype, cfg)
        compare(lib, forward + "x", (w, x, dy), kw, dtype, cfg)
        compare(lib, forward + "w", (w, x, dy), kw, dtype, cfg)


@pytest.mark.parametrize("lib", LIBRARIES)
def test_pool_family_matches_cpu(lib):
    rng = np.random.default_rng(9)
    for _ in range(CONFIGS):
        cfg = pool_config(rng)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        x = pool_data(rng, cfg["x"], dtype, cfg["data"])
        y = knetcnn.pool(x, **kw)
        compare(lib, "pool", (x,), kw, dtype, cfg)
        if cfg["data"] == "distinct":  # backends may route ties and NaN windows differently
            dy = normal(rng, y.shape, dtype)
            compare(lib, "poolx", (x, y, dy), kw, dtype, cfg)
        ucfg = pool_config(rng, unpooling=True)
        ux = normal(rng, ucfg["x"], ucfg["dtype"])
        compare(lib, "unpool", (ux,), ucfg["kwargs"], ucfg["dtype"], ucfg)
        uy = knetcnn.unpool(ux, **ucfg["kwargs"])
        compare(lib, "unpoolx", (ux, uy, normal(rng, uy.shape, ucfg["dtype"])), ucfg["kwargs"], ucfg["dtype"], ucfg)


@pytest.mark.skipif(not VECTORS.exists(), reason=f"no vectors.json at {VECTORS}")
@pytest.mark.parametrize("lib", LIBRARIES)
def test_golden_vectors_on_the_gpu(lib):
    for case in json.loads(VECTORS.read_text())["cases"]:
        arrays = [np.array(a["data"], np.float64).reshape(a["shape"]) for a in case["args"].values()]
        ours, _ = run_both(lib, case["op"], *arrays, **case["kwargs"])
        expect = np.array(case["expect"]["data"]).reshape(case["expect"]["shape"])
        np.testing.assert_allclose(ours, expect, rtol=1e-12, atol=1e-12, err_msg=case["source"])


@pytest.mark.parametrize("lib", LIBRARIES)
def test_adjoint_identities_on_the_gpu(lib):
    rng = np.random.default_rng(10)
    for _ in range(50):
        cfg = conv_config(rng)
        kw = cfg["kwargs"]
        w, x = normal(rng, cfg["w"], np.float64), normal(rng, cfg["x"], np.float64)
        dw, dx = to_device(lib, w), to_device(lib, x)
        y = to_host(lib, knetcnn.conv4(dw, dx, **kw))
        r = normal(rng, y.shape, np.float64)
        dr = to_device(lib, r)
        lhs = float(np.vdot(y, r))
        via_x = float(np.vdot(x, to_host(lib, knetcnn.conv4x(dw, dx, dr, **kw))))
        via_w = float(np.vdot(w, to_host(lib, knetcnn.conv4w(dw, dx, dr, **kw))))
        tol = 1e-9 * max(1.0, abs(lhs))
        assert abs(lhs - via_x) <= tol and abs(lhs - via_w) <= tol, (cfg, lhs, via_x, via_w)


@pytest.mark.parametrize("lib", LIBRARIES)
def test_max_pool_gradient_goes_to_one_cell_per_window(lib):
    rng = np.random.default_rng(11)
    x = pool_data(rng, (2, 3, 8, 8), np.float64, "distinct")
    y = knetcnn.pool(x)
    dy = np.ones_like(y)
    dx, cpu = run_both(lib, "poolx", x, y, dy)
    np.testing.assert_array_equal(dx, cpu)
    assert np.count_nonzero(dx) == y.size


def test_deterministic_policy_repeats_bit_identically():
    rng = np.random.default_rng(12)
    w, x = normal(rng, (16, 8, 3, 3), np.float32), normal(rng, (4, 8, 20, 20), np.float32)
    dy = normal(rng, (4, 16, 18, 18), np.float32)
    kw, dx = knetcnn.KnetArray(w), knetcnn.KnetArray(x)
    ddy = knetcnn.KnetArray(dy)
    with knetcnn.options(algo="deterministic"):
        first = knetcnn.conv4w(kw, dx, ddy).get()
        for _ in range(5):
            np.testing.assert_array_equal(knetcnn.conv4w(kw, dx, ddy).get(), first)


@pytest.mark.parametrize("policy", ["heuristic", "benchmark", "deterministic"])
def test_every_policy_matches_cpu(policy):
    rng = np.random.default_rng(13)
    w, x = normal(rng, (8, 4, 3, 3), np.float64), normal(rng, (2, 4, 12, 12), np.float64)
    with knetcnn.options(algo=policy):
        ours = knetcnn.conv4(knetcnn.KnetArray(w), knetcnn.KnetArray(x), padding=1).get()
    np.testing.assert_allclose(ours, knetcnn.conv4(w, x, padding=1), rtol=1e-10, atol=1e-12)


def test_torch_non_default_stream_is_honoured():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    w, x = normal(rng, (8, 4, 3, 3), np.float32), normal(rng, (32, 4, 64, 64), np.float32)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        tw, tx = torch.as_tensor(w, device="cuda"), torch.as_tensor(x, device="cuda")
        ty = knetcnn.conv4(tw, tx, mode=1) * 2  # torch works on `side` right after our kernel
    side.synchronize()
    ref = knetcnn.conv4(w, x, mode=1) * 2
    np.testing.assert_allclose(ty.cpu().numpy(), ref, rtol=1e-4, atol=1e-4)


def test_cupy_non_default_stream_is_honoured():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(15)
    x = normal(rng, (16, 8, 64, 64), np.float32)
    with cupy.cuda.Stream(non_blocking=True) as s:
        cx = cupy.asarray(x) + 1  # produced on s
        cy = knetcnn.pool(cx, window=3, stride=2, padding=1, mode=2)
        s.synchronize()
    np.testing.assert_allclose(cy.get(), knetcnn.pool(x + 1, window=3, stride=2, padding=1, mode=2), rtol=1e-6)


def test_calls_from_many_threads_agree_with_serial():
    rng = np.random.default_rng(16)
    cases = [(normal(rng, (4, 3, 3, 3), np.float32), normal(rng, (2, 3, 16, 16), np.float32)) for _ in range(16)]
    expected = [knetcnn.conv4(w, x, padding=1) for w, x in cases]
    results, errors = [None] * len(cases), []

    def work(i):
        try:
            w, x = cases[i]
            for _ in range(10):
                results[i] = knetcnn.conv4(knetcnn.KnetArray(w), knetcnn.KnetArray(x), padding=1).get()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r, e in zip(results, expected):
        np.testing.assert_allclose(r, e, rtol=1e-4, atol=1e-5)
