"""Where calls run: NumPy arrays on the CPU (NumPy results), CUDA arrays to the device backend,
anything else refused; host and device never mixed; device dtypes include bfloat16."""

import numpy as np
import pytest

import knetcnn
from knetcnn._core import core

REASON = core.device_unavailable_reason(0)


class CudaArrayInterface:
    """Stands in for a CuPy / Numba / PyTorch CUDA array: only the protocol is looked at."""

    def __init__(self, shape, typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0, False), "version": 3}

    def reshape(self, *shape):
        return ("reshaped", shape)


class DLPackArray:
    def __init__(self, shape, device_type, dtype="float32"):
        self.shape, self.dtype, self._device = shape, dtype, device_type

    def __dlpack__(self, stream=None):
        raise AssertionError("dispatch must not export the array")

    def __dlpack_device__(self):
        return (self._device, 0)


def expect_device_backend(call):
    """Without a GPU the device backend says why (naming the call); with one, these memory-less
    fakes reach the device layer, which refuses them as arrays it cannot use."""
    if REASON:
        with pytest.raises(knetcnn.DeviceUnavailableError) as e:
            call()
        assert REASON in str(e.value) and "no GPU is usable" in str(e.value)
        assert str(e.value).split(":")[0] in {"conv4", "conv4x", "conv4w", "deconv4", "deconv4w", "deconv4x",
                                               "pool", "poolx", "unpool", "unpoolx"}
    else:
        with pytest.raises((TypeError, ValueError)):
            call()


def test_numpy_in_numpy_out():
    y = knetcnn.pool(np.ones((1, 1, 4), np.float32))
    assert type(y) is np.ndarray and y.dtype == np.float32


def test_ndarray_subclasses_are_read_as_plain_arrays():
    class Tagged(np.ndarray):
        pass

    x = np.arange(4.0).reshape(1, 1, 4).view(Tagged)
    np.testing.assert_array_equal(knetcnn.pool(x), [[[1.0, 3.0]]])


@pytest.mark.parametrize("device_type", [2, 13])  # kDLCUDA, kDLCUDAManaged
def test_cuda_dlpack_goes_to_the_device_backend(device_type):
    expect_device_backend(lambda: knetcnn.pool(DLPackArray((1, 1, 4), device_type)))


def test_cuda_array_interface_goes_to_the_device_backend():
    w, x = CudaArrayInterface((2, 1, 3)), CudaArrayInterface((1, 1, 7))
    expect_device_backend(lambda: knetcnn.conv4(w, x))


def test_device_bfloat16_is_accepted_and_device_calls_are_validated_first():
    expect_device_backend(lambda: knetcnn.pool(DLPackArray((1, 1, 4), 2, "bfloat16")))
    with pytest.raises(ValueError, match="pool: padding=3"):
        knetcnn.pool(DLPackArray((1, 1, 4), 2), padding=3)
    with pytest.raises(TypeError, match="pool: x has dtype int32"):
        knetcnn.pool(DLPackArray((1, 1, 4), 2, "torch.int32"))
    with pytest.raises(TypeError, match="share one dtype"):
        knetcnn.conv4(CudaArrayInterface((2, 1, 3), "<f8"), CudaArrayInterface((1, 1, 7), "<f4"))


def test_host_dlpack_objects_are_not_numpy_and_are_refused():
    with pytest.raises(TypeError, match=r"pool: x is a .*DLPackArray: .*np\.asarray\(x"):
        knetcnn.pool(DLPackArray((1, 1, 4), 1))  # kDLCPU: e.g. a CPU torch tensor


def test_mixing_host_and_device_is_a_type_error_that_says_so():
    with pytest.raises(TypeError) as e:
        knetcnn.conv4(np.zeros((2, 1, 3), np.float32), CudaArrayInterface((1, 1, 7)))
    message = str(e.value)
    assert message.startswith("conv4: ")
    assert "w is a numpy.ndarray (host)" in message and "CudaArrayInterface (device)" in message


def test_mat_is_layout_only_on_host_and_device():
    x = np.arange(24.0).reshape(2, 3, 4)
    assert knetcnn.mat(x).shape == (2, 12) and np.shares_memory(knetcnn.mat(x), x)
    assert knetcnn.mat(x, dims=1).shape == (6, 4)
    assert knetcnn.mat(x, dims=0).shape == (24, 1) and knetcnn.mat(x, dims=3).shape == (1, 24)
    assert knetcnn.mat(np.arange(6).reshape(2, 3)).dtype == np.arange(1).dtype  # any dtype
    assert knetcnn.mat(CudaArrayInterface((2, 3, 4))) == ("reshaped", (2, 12))


def test_memoized_geometries_answer_like_fresh_ones_and_stay_bounded():
    from knetcnn import _geometry

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 9))
    first = knetcnn.pool(x, window=3, stride=2, padding=1)
    # The same call again (memoized), and spellings that skip the memo, agree exactly.
    np.testing.assert_array_equal(knetcnn.pool(x, window=3, stride=2, padding=1), first)
    np.testing.assert_array_equal(knetcnn.pool(x, window=[3, 3], stride=np.int64(2), padding=(1, 1)), first)
    # A refused spelling is refused after the valid one was memoized, and errors are not memoized.
    for _ in range(2):
        with pytest.raises(TypeError, match="stride"):
            knetcnn.pool(x, window=3, stride=True, padding=1)
        with pytest.raises(ValueError, match="padding"):
            knetcnn.pool(x, window=3, stride=2, padding=3)
    # Bounded: many distinct shapes never hold more than the limit.
    for n in range(_geometry._MEMO_LIMIT + 50):
        _geometry.pool("pool", (1, 1, 4 + n), window=2, padding=0, stride=2, mode=0, maxpoolingNanOpt=1)
    assert 0 < len(_geometry._MEMO) <= _geometry._MEMO_LIMIT
