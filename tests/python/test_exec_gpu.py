"""GPU tier of the exec_* bindings: raw device pointers (allocated with cuda-python) against small
NumPy references. Skipped, with the reason, where no GPU is usable (conftest.py)."""

import numpy as np
import pytest

import knetcnn
from knetcnn._core import core

pytestmark = pytest.mark.gpu


class Device:
    """A device copy of a NumPy array, freed when garbage-collected."""

    def __init__(self, host):
        from cuda.bindings import runtime as rt

        self.rt, self.host = rt, np.ascontiguousarray(host)
        err, self.ptr = rt.cudaMalloc(max(self.host.nbytes, 1))
        assert err == rt.cudaError_t.cudaSuccess, err
        (err,) = rt.cudaMemcpy(self.ptr, self.host.ctypes.data, self.host.nbytes,
                               rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        assert err == rt.cudaError_t.cudaSuccess, err

    @property
    def address(self):
        return int(self.ptr)

    def get(self):
        out = np.empty_like(self.host)
        self.rt.cudaDeviceSynchronize()
        (err,) = self.rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        assert err == self.rt.cudaError_t.cudaSuccess, err
        return out

    def __del__(self):
        self.rt.cudaFree(self.ptr)


def conv2d_reference(w, x, padding, stride, mode):
    """y[n, o, i, j] = sum_c,a,b w'[o, c, a, b] * xpad[n, c, i*s + a, j*s + b] (w' flipped for mode 0)."""
    if mode == 0:
        w = w[:, :, ::-1, ::-1]
    p, s = padding, stride
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o_h = (xp.shape[2] - w.shape[2]) // s + 1
    o_w = (xp.shape[3] - w.shape[3]) // s + 1
    y = np.zeros((x.shape[0], w.shape[0], o_h, o_w))
    for i in range(o_h):
        for j in range(o_w):
            patch = xp[:, :, i * s:i * s + w.shape[2], j * s:j * s + w.shape[3]]
            y[:, :, i, j] = np.einsum("ncab,ocab->no", patch, w)
    return y


@pytest.fixture(autouse=True)
def fresh_cache():
    knetcnn.clear_cache()
    yield
    knetcnn.clear_cache()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [0, 1])
def test_conv4_matches_numpy(dtype, mode):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    g = core.conv4_geometry("conv4", w.shape, x.shape, 1, 2, 1, mode, 1)
    y = Device(np.zeros(g.output_shape, dtype))
    dw, dx = Device(w), Device(x)
    core.exec_conv4(g, dtype, dw.address, dx.address, y.address, alpha=2.0)
    want = 2.0 * conv2d_reference(w.astype(np.float64), x.astype(np.float64), 1, 2, mode)
    np.testing.assert_allclose(y.get(), want, rtol=1e-4, atol=1e-4)


def test_pool_and_poolx_deterministic_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    g = core.pool_geometry("pool", x.shape, 2, 0, None, 0, 1)
    want = x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    dx_ = Device(x)
    y = Device(np.zeros(g.output_shape, np.float32))
    with knetcnn.options(algo="deterministic"):
        assert core.plan_pool(g)["cudnn_mode"] == 3
        core.exec_pool(g, "float32", dx_.address, y.address)
        np.testing.assert_array_equal(y.get(), want)
        dy = Device(np.ones(g.output_shape, np.float32))
        dx = Device(np.zeros(x.shape, np.float32))
        core.exec_poolx(g, "float32", dx_.address, y.address, dy.address, dx.address)
        got = dx.get()
    # Each window's gradient lands on its maximum.
    assert got.sum() == 8 and set(np.unique(got)) <= {0.0, 1.0}
    assert np.all(got[x == np.repeat(np.repeat(want, 2, axis=2), 2, axis=3)] == 1)


def test_benchmark_choice_is_cached_and_reused():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    g = core.conv4_geometry("conv4", w.shape, x.shape, 1, 1, 1, 1, 1)
    dw, dx, y = Device(w), Device(x), Device(np.zeros(g.output_shape, np.float32))
    with knetcnn.options(algo="benchmark"):
        core.exec_conv4(g, "float32", dw.address, dx.address, y.address)
        first = knetcnn.cache_info()
        core.exec_conv4(g, "float32", dw.address, dx.address, y.address)
    second = knetcnn.cache_info()
    assert first["size"] == 1 and first["misses"] == 1
    assert second["hits"] == first["hits"] + 1 and second["misses"] == first["misses"]
    np.testing.assert_allclose(y.get(), conv2d_reference(w, x, 1, 1, 1), rtol=1e-4, atol=1e-4)


def test_host_memory_is_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    y = Device(np.zeros((1, 1, 2, 2), np.float32))
    g = core.pool_geometry("pool", x.shape, 2, 0, None, 0, 1)
    with pytest.raises(ValueError, match="host memory"):
        core.exec_pool(g, "float32", x.ctypes.data, y.address)


def test_misaligned_device_pointer_is_refused_before_the_gpu_sees_it():
    # A misaligned element access would fault the GPU and end the CUDA context.
    x = Device(np.zeros((1, 1, 4, 4), np.float32))
    y = Device(np.zeros((1, 1, 2, 2), np.float32))
    g = core.pool_geometry("pool", (1, 1, 4, 4), 2, 0, None, 0, 1)
    with pytest.raises(ValueError, match=r"pool: x = 0x[0-9a-f]+ is not a multiple of 4 bytes"):
        core.exec_pool(g, "float32", x.address + 2, y.address)
    core.exec_pool(g, "float32", x.address, y.address)  # the context is still usable
    np.testing.assert_array_equal(y.get(), np.zeros((1, 1, 2, 2), np.float32))
