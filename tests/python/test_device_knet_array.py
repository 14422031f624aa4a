"""KnetArray: refusals and GPU-less behaviour here; exports tested on KnetArrays that wrap host
memory (``KnetArray._wrap``), which are only ever parsed, never computed on."""

import copy
import gc
import pickle
import sys
import weakref

import numpy as np
import pytest

import knetcnn
from knetcnn import KnetArray
from knetcnn._core import core
from knetcnn.device import as_device_view, dlpack_abi as abi, dtypes, safepoints
from knetcnn.device.dlpack_import import DLPackImport

NO_GPU = core.device_unavailable_reason(0)
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour where no GPU is usable")


def wrapped(shape=(2, 3), dtype=np.float32):
    host = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    return KnetArray._wrap(host.ctypes.data, shape, dtype, device=0, owner=host), host


@needs_no_gpu
@pytest.mark.parametrize("make", [lambda: KnetArray(np.ones(3)), lambda: KnetArray.empty((2, 3)),
                                  lambda: KnetArray.zeros(4, "float16"), lambda: KnetArray([1.0, 2.0])])
def test_construction_without_a_gpu_says_why(make):
    with pytest.raises(knetcnn.DeviceUnavailableError) as error:
        make()
    assert "no GPU is usable" in str(error.value) and NO_GPU in str(error.value)
    assert str(error.value).startswith("KnetArray")


@pytest.mark.parametrize("a, message", [(np.arange(3), "a has dtype int64.*pass dtype='float32'"),
                                        (np.ones(2, np.complex64), "a has dtype complex64"),
                                        (np.ones(2, bool), "a has dtype bool")])
def test_host_dtype_refusals(a, message):
    with pytest.raises(TypeError, match=message):
        KnetArray(a)


@pytest.mark.parametrize("dtype", ["int32", np.int8, "complex128", "float128", object()])
def test_dtype_argument_refusals(dtype):
    with pytest.raises(TypeError, match=r"KnetArray.empty: dtype=.*must be one of float16, float32, float64"):
        KnetArray.empty((2,), dtype)


def test_bfloat16_without_ml_dtypes_is_a_clear_type_error(monkeypatch):
    monkeypatch.setattr(dtypes, "_ml_dtypes", lambda: None)
    with pytest.raises(TypeError, match=r"KnetArray.empty: dtype bfloat16 needs the ml_dtypes package.*pip install"):
        KnetArray.empty((2,), "bfloat16")


@pytest.mark.parametrize("shape, error", [((2, -1), ValueError), ((2.5,), TypeError), ("23", TypeError),
                                          ((True,), TypeError)])
def test_shape_refusals(shape, error):
    with pytest.raises(error, match=r"KnetArray.empty: shape="):
        KnetArray.empty(shape)


@pytest.mark.parametrize("device, error", [(-1, ValueError), (1.0, TypeError), (True, TypeError), ("0", TypeError)])
def test_device_refusals(device, error):
    with pytest.raises(error, match=r"KnetArray: device="):
        KnetArray(np.ones(2, np.float32), device=device)


def test_device_arrays_are_not_copied_as_host_arrays():
    k, _ = wrapped()
    with pytest.raises(TypeError, match="a is a device array"):
        KnetArray(k)


def test_properties_and_repr():
    k, host = wrapped((2, 3, 4), np.float64)
    assert (k.shape, k.ndim, k.size, k.itemsize, k.nbytes) == ((2, 3, 4), 3, 24, 8, 192)
    assert k.strides == host.strides and k.dtype == np.float64 and k.device == 0 and len(k) == 2
    assert k.ptr == host.ctypes.data
    assert repr(k) == f"KnetArray(shape=(2, 3, 4), dtype=float64, device=0, ptr={host.ctypes.data:#x})"


def test_reshape_is_a_view():
    k, host = wrapped((2, 6))
    r = k.reshape(3, -1)
    assert r.shape == (3, 4) and r.ptr == k.ptr and r._alloc is k._alloc
    assert k.reshape((12,)).shape == (12,) and k.reshape([4, 3]).shape == (4, 3)
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 6\) \(12 elements\) to \(5, -1\)"):
        k.reshape(5, -1)
    with pytest.raises(ValueError, match="at most one -1"):
        k.reshape(-1, -1)
    with pytest.raises(TypeError, match="shape must hold ints"):
        k.reshape(2.0, 6)


def test_cuda_array_interface_export():
    k, host = wrapped((2, 3), np.float16)
    cai = k.__cuda_array_interface__
    assert cai == {"shape": (2, 3), "typestr": "<f2", "data": (host.ctypes.data, False), "strides": None,
                   "version": 3, "stream": None}


def test_bfloat16_cai_is_never_float16():
    pytest.importorskip("ml_dtypes")
    host = np.zeros(3, np.uint16)
    k = KnetArray._wrap(host.ctypes.data, (3,), "bfloat16", owner=host)
    assert k.__cuda_array_interface__["typestr"] == "<V2"


def test_own_cai_round_trip_through_the_parser(cuda):
    k, host = wrapped((4, 5), np.float32)

    class Exporter:  # only the CAI of the KnetArray, as another library would see it
        __cuda_array_interface__ = k.__cuda_array_interface__

        def __dlpack_device__(self):
            return (2, 0)

    v = as_device_view(Exporter(), "conv4", "x")
    assert (v.ptr, v.shape, v.strides, v.dtype, v.device) == (host.ctypes.data, (4, 5), (5, 1), "float32", 0)


def test_dlpack_device():
    k, _ = wrapped()
    assert k.__dlpack_device__() == (abi.DLDeviceType.kDLCUDA, 0) == (2, 0)


@pytest.mark.parametrize("max_version, name", [(None, b"dltensor"), ((0, 8), b"dltensor"),
                                               ((1, 0), b"dltensor_versioned"), ((1, 3), b"dltensor_versioned")])
def test_dlpack_export_consumed_by_our_importer(max_version, name):
    k, host = wrapped((3, 4), np.float64)
    ref = weakref.ref(k)
    capsule = k.__dlpack__(max_version=max_version)
    del k
    assert abi.capsule_name(capsule) == name
    imported = DLPackImport(capsule, "test", "k")
    t = imported.struct.dl_tensor
    assert (t.data, t.device.device_type, t.device.device_id, t.ndim) == (host.ctypes.data, 2, 0, 2)
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (2, 64, 1)
    assert [t.shape[i] for i in range(2)] == [3, 4] and [t.strides[i] for i in range(2)] == [4, 1]
    if imported.versioned:
        assert (imported.struct.version.major, imported.struct.version.minor, imported.struct.flags) == (1, 1, 0)
    assert imported.struct.manager_ctx == id(ref())  # a strong reference to the array
    imported.close()
    gc.collect()
    assert ref() is None


def test_export_keeps_the_array_alive_until_the_deleter_runs():
    k, host = wrapped()
    ref = weakref.ref(k)
    capsule = k.__dlpack__(max_version=(1, 0))
    imported = DLPackImport(capsule, "test", "k")
    del k, capsule
    gc.collect()
    assert ref() is not None  # the consumer still holds the tensor
    imported.close()
    gc.collect()
    assert ref() is None


def test_unconsumed_capsule_runs_the_deleter_when_dropped():
    k, _ = wrapped()
    ref = weakref.ref(k)
    capsule = k.__dlpack__()
    del k
    gc.collect()
    assert ref() is not None
    del capsule  # never consumed: its destructor must call the deleter
    gc.collect()
    assert ref() is None


def test_consumed_capsule_does_not_run_the_deleter_a_second_time():
    k, _ = wrapped()
    count = {"deleted": 0}
    weakref.finalize(k, lambda: count.__setitem__("deleted", count["deleted"] + 1))
    capsule = k.__dlpack__(max_version=(1, 0))
    imported = DLPackImport(capsule, "test", "k")
    del k
    imported.close()
    gc.collect()
    assert count["deleted"] == 1
    del capsule, imported  # the used capsule's destructor must not run the deleter again
    gc.collect()
    assert count["deleted"] == 1


def test_many_exports_and_drops_leave_nothing_behind():
    k, _ = wrapped((8,))
    refcount = sys.getrefcount(k)
    for i in range(200):
        capsule = k.__dlpack__(max_version=(1, 0) if i % 2 else None)
        if i % 3:
            DLPackImport(capsule, "test", "k").close()
        del capsule
    gc.collect()
    assert sys.getrefcount(k) == refcount


@pytest.mark.parametrize("keywords, error, message", [
    ({"stream": 0}, ValueError, "stream=0 is disallowed as ambiguous"),
    ({"stream": -5}, ValueError, "must be -1, 1, 2 or a stream handle"),
    ({"stream": 1.0}, TypeError, "stream must be None or an int"),
    ({"dl_device": (2, 1)}, BufferError, "can export to CUDA device 0 or to kDLCPU"),
    ({"dl_device": (10, 0)}, BufferError, "can export to CUDA device 0"),
    ({"dl_device": (1, 0), "copy": False}, BufferError, "needs a copy to host memory but copy=False"),
    ({"dl_device": (1, 0), "stream": 5}, ValueError, "a kDLCPU export takes stream=None"),
])
def test_dlpack_argument_refusals(keywords, error, message):
    k, _ = wrapped()
    refcount = sys.getrefcount(k)
    with pytest.raises(error, match=message):
        k.__dlpack__(**keywords)
    assert sys.getrefcount(k) == refcount


@pytest.mark.parametrize("stream", [None, 1, 2, -1, 0x7000])
def test_dlpack_export_without_pending_work_needs_no_cuda(stream):
    k, _ = wrapped()
    capsule = k.__dlpack__(stream=stream)
    assert abi.capsule_name(capsule) == b"dltensor"


def test_a_consumer_failing_mid_import_keeps_its_error_and_releases_the_array():
    # NumPy takes our capsule, then refuses the CUDA device and drops the capsule with its error
    # set: the cleanup must neither lose that error nor leak the array. What matters is a clean
    # exception (not a crash or a SystemError about a lost one) and the array freed, whatever
    # NumPy's class and wording.
    k, _ = wrapped()
    ref = weakref.ref(k)
    with pytest.raises(Exception) as error:
        np.from_dlpack(k)
    assert not isinstance(error.value, SystemError)
    del k
    gc.collect()
    assert ref() is None


def test_array_copy_false_is_refused():
    k, _ = wrapped()
    with pytest.raises(ValueError, match="a copy is always made"):
        k.__array__(copy=False)


# --- copy, deepcopy, pickle ------------------------------------------------------------------------

def test_copy_shares_the_memory_deepcopy_and_pickle_copy_it(cuda):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    k = KnetArray(host)
    shallow = copy.copy(k)
    assert shallow is not k and shallow._alloc is k._alloc and shallow.shape == k.shape
    deep = copy.deepcopy(k)
    assert deep._alloc is not k._alloc and deep.ptr != k.ptr
    np.testing.assert_array_equal(deep.get(), host)
    back = pickle.loads(pickle.dumps(k))
    assert back.ptr not in (k.ptr, deep.ptr) and back.device == k.device and back.dtype == k.dtype
    np.testing.assert_array_equal(back.get(), host)
    # Each allocation is freed exactly once: no double free from copied slots.
    ptrs = {k.ptr, deep.ptr, back.ptr}
    del k, shallow, deep, back
    gc.collect()
    safepoints.drain()
    assert sorted(cuda.freed) == sorted(ptrs)


def test_deepcopy_and_pickle_route_through_copy_and_get(monkeypatch):
    k, host = wrapped((2, 2))
    made = []
    monkeypatch.setattr(KnetArray, "copy", lambda self: made.append(self) or "device copy")
    monkeypatch.setattr(KnetArray, "get", lambda self: host)
    assert copy.deepcopy(k) == "device copy" and made == [k]
    assert copy.deepcopy([k, k]) == ["device copy"] * 2 and len(made) == 2  # memo: one copy per object
    function, arguments = k.__reduce__()
    assert function is KnetArray and arguments[0] is host and arguments[1:] == (None, 0)


# --- GPU tier -------------------------------------------------------------------------------------

GPU_DTYPES = ["float16", "float32", "float64"]


def _random(shape, dtype):
    rng = np.random.default_rng(7)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES + ["bfloat16"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3, 4, 5)])
def test_gpu_round_trip_is_exact(dtype, shape):
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        host = _random(shape, np.float32).astype(ml_dtypes.bfloat16)
    else:
        host = _random(shape, dtype)
    k = KnetArray(host)
    assert k.shape == shape and k.dtype == host.dtype
    back = k.get()
    assert back.dtype == host.dtype and back.tobytes() == host.tobytes()
    assert np.asarray(k).tobytes() == host.tobytes()
    assert k.copy().get().tobytes() == host.tobytes()
    assert k.reshape(-1).get().tobytes() == host.reshape(-1).tobytes()


@pytest.mark.gpu
def test_gpu_zeros_and_dtype_conversion():
    assert not KnetArray.zeros((3, 4), "float16").get().any()
    k = KnetArray([[1, 2], [3, 4]], dtype="float32")
    assert k.get().tolist() == [[1.0, 2.0], [3.0, 4.0]] and k.dtype == np.float32


@pytest.mark.gpu
def test_gpu_memory_is_freed_when_dropped():
    from knetcnn.device import cuda_runtime as rt

    nbytes = 256 << 20
    KnetArray.zeros(1, "float32").get()  # create the context first
    free_before, _ = rt.mem_get_info(0)
    k = KnetArray.empty(nbytes // 4, "float32")
    free_during, _ = rt.mem_get_info(0)
    del k
    gc.collect()
    safepoints.collect()  # frees are done at safe points (a main-thread collection is one too)
    free_after, _ = rt.mem_get_info(0)
    assert free_before - free_during >= nbytes
    assert free_after - free_during >= nbytes


@pytest.mark.gpu
def test_gpu_dlpack_host_copy_export():
    host = _random((3, 4), np.float32)
    k = KnetArray(host)
    np.testing.assert_array_equal(np.from_dlpack(_HostExport(k)), host)


class _HostExport:
    """Asks the KnetArray for a kDLCPU export, as NumPy cannot ask for one itself."""

    def __init__(self, k):
        self.k = k

    def __dlpack_device__(self):
        return (1, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return self.k.__dlpack__(dl_device=(1, 0), max_version=max_version)


@pytest.mark.gpu
def test_gpu_non_default_stream():
    from cuda.bindings import runtime as cudart

    from knetcnn.device import cuda_runtime as rt

    stream = rt.check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
    host = _random((1024, 1024), np.float32)
    k = KnetArray(host)
    handle = int(stream)
    v = as_device_view(k, "test", "k", stream=handle)
    # Stand-in for a kernel: overwrite on the non-blocking stream, then hand it back.
    rt.check(cudart.cudaMemsetAsync(v.ptr, 0, v.nbytes, handle), "cudaMemsetAsync")
    v.release()
    # The caller's stream may go as soon as the call returns: only our event is kept.
    rt.check(cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")
    assert k.__cuda_array_interface__["stream"] in (None, 1)  # 1 while the event is pending
    assert not k.get().any()  # get() waited for the event
    assert k.__cuda_array_interface__["stream"] is None


@pytest.mark.gpu
def test_gpu_copy_deepcopy_pickle():
    host = _random((3, 4), np.float32)
    k = KnetArray(host)
    assert copy.copy(k).ptr == k.ptr
    deep, back = copy.deepcopy(k), pickle.loads(pickle.dumps(k))
    assert len({k.ptr, deep.ptr, back.ptr}) == 3
    for other in (deep, back):
        np.testing.assert_array_equal(other.get(), host)
    del k, deep, back
    gc.collect()
    safepoints.collect()


@pytest.mark.gpu
def test_gpu_cupy_consumes_cai_and_dlpack():
    cupy = pytest.importorskip("cupy")
    host = _random((3, 5), np.float32)
    k = KnetArray(host)
    np.testing.assert_array_equal(cupy.asarray(k).get(), host)  # CAI
    np.testing.assert_array_equal(cupy.from_dlpack(k).get(), host)  # DLPack
    c = cupy.asarray(host)
    v = as_device_view(c, "test", "c", stream=cupy.cuda.get_current_stream().ptr)
    assert (v.ptr, v.shape, v.dtype, v.source) == (c.data.ptr, (3, 5), "float32", "dlpack")
    v.release()


@pytest.mark.gpu
def test_gpu_torch_consumes_dlpack_and_cai():
    torch = pytest.importorskip("torch")
    host = _random((4, 2), np.float32)
    k = KnetArray(host)
    np.testing.assert_array_equal(torch.from_dlpack(k).cpu().numpy(), host)
    np.testing.assert_array_equal(torch.as_tensor(k, device="cuda").cpu().numpy(), host)  # CAI
    t = torch.ones(3, 2, dtype=torch.bfloat16, device="cuda")
    v = as_device_view(t, "test", "t", stream=torch.cuda.current_stream().cuda_stream)
    assert (v.ptr, v.dtype, v.source) == (t.data_ptr(), "bfloat16", "dlpack")
    v.release()


def test_host_dlpack_arrays_are_accepted_as_host_input():
    # A host array that also carries a (refusing) CAI property must still be read as a host array.
    class HostTensor:
        def __init__(self, a):
            self.a = a

        def __dlpack_device__(self):
            return (1, 0)

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("not a CUDA tensor")

        def __array__(self, dtype=None, copy=None):
            return self.a

    if NO_GPU:
        with pytest.raises(knetcnn.DeviceUnavailableError):  # got past the host/device check
            KnetArray(HostTensor(np.ones(2, np.float32)))
    with pytest.raises(TypeError, match="a has dtype int64"):
        KnetArray(HostTensor(np.ones(2, np.int64)))
