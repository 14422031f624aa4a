"""GPU tier: foreign libraries whose current stream is not the one knetcnn runs on, and JAX
temporaries. The stand-in for a cuDNN kernel is a device-to-device copy on our stream (it reads
the input and writes the output), large enough to still be running when the caller moves on.
Skipped where no GPU is usable, and per library where it is not installed."""

import gc

import numpy as np
import pytest
from cuda.bindings import runtime as cudart

from knetcnn.device import (allocate_like, as_device_view, current_stream, finalize_result, safepoints)
from knetcnn.device import cuda_runtime as rt

pytestmark = pytest.mark.gpu
N = 16 << 20  # elements: 64 MiB of float32, so the copy outlasts the Python code after it
EXPECTED = (np.arange(N, dtype=np.float32) * 2)[::4099]  # exact in float32 (below 2**24 * 2)


@pytest.fixture
def our_stream():
    stream = int(rt.check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate"))
    yield stream
    rt.stream_synchronize(stream, 0)
    safepoints.collect()
    rt.check(cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")


def _copy_on(stream, dst_view, src_view):
    rt.check(cudart.cudaMemcpyAsync(dst_view.ptr, src_view.ptr, src_view.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync")


def _run(x, stream):
    """One call as the dispatcher makes it, with a copy for the kernel."""
    xv = as_device_view(x, "test", "x", stream)
    out, yv = allocate_like(x, xv.shape, xv.dtype, xv.device, stream, function="test")
    _copy_on(stream, yv, xv)
    xv.release(stream)
    return finalize_result(out, yv, stream)


def test_torch_on_another_stream(our_stream):
    torch = pytest.importorskip("torch")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        assert current_stream(torch.empty(1, device="cuda"), 0) == side.cuda_stream != our_stream
        x = torch.arange(N, dtype=torch.float32, device="cuda") * 2  # pending on `side`
        y = _run(x, our_stream)
        del x  # a temporary: must stay alive until our copy has read it
        assert safepoints.pending() >= 1
        sample = y[::4099].cpu().numpy()  # on `side`, which must wait for our copy
    np.testing.assert_array_equal(sample, EXPECTED)
    torch.cuda.synchronize()
    safepoints.collect()
    assert safepoints.pending() == 0


def test_cupy_on_another_stream(our_stream):
    cupy = pytest.importorskip("cupy")
    side = cupy.cuda.Stream(non_blocking=True)
    with side:
        assert current_stream(cupy.empty(1), 0) == side.ptr != our_stream
        x = cupy.arange(N, dtype=cupy.float32) * 2
        y = _run(x, our_stream)
        del x
        sample = y[::4099].get()
    np.testing.assert_array_equal(sample, EXPECTED)
    side.synchronize()
    safepoints.collect()
    assert safepoints.pending() == 0


def test_jax_temporaries(our_stream):
    jnp = pytest.importorskip("jax.numpy")
    y = _run(jnp.arange(N, dtype=jnp.float32) * 2, our_stream)  # the input is a temporary
    gc.collect()
    np.testing.assert_array_equal(np.asarray(y[::4099]), EXPECTED)
    safepoints.collect()
    assert safepoints.pending() == 0


def test_numba_cai_producer_on_our_stream(our_stream):
    cuda = pytest.importorskip("numba.cuda")
    x = cuda.to_device(np.arange(1024, dtype=np.float32))
    y = _run(x, our_stream)
    rt.stream_synchronize(our_stream, 0)
    np.testing.assert_array_equal(y.copy_to_host(), np.arange(1024, dtype=np.float32))
