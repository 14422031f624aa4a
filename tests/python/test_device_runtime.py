"""The checked cuda-python wrappers: result unpacking and the error each failure becomes."""

import types

import pytest
from cuda.bindings import runtime as cudart

import knetcnn
from knetcnn._core import core
from knetcnn.device import cuda_runtime as rt

E = cudart.cudaError_t
NO_GPU = core.device_unavailable_reason(0)


def test_check_unpacks_results():
    assert rt.check((E.cudaSuccess,), "f") is None
    assert rt.check((E.cudaSuccess, 5), "f") == 5
    assert rt.check((E.cudaSuccess, 5, 6), "f") == (5, 6)


def test_out_of_memory_is_a_cuda_memory_error_with_advice():
    with pytest.raises(knetcnn.CudaMemoryError) as error:
        rt.check((E.cudaErrorMemoryAllocation, None), "cudaMalloc(1024 bytes) on device 0", 0)
    assert isinstance(error.value, MemoryError) and error.value.code_name == "cudaErrorMemoryAllocation"
    assert error.value.code == 2
    assert str(error.value).startswith("cudaMalloc(1024 bytes) on device 0 failed: cudaErrorMemoryAllocation: ")
    assert "free device memory" in str(error.value)


def test_other_failures_are_cuda_errors_naming_the_call():
    with pytest.raises(knetcnn.CudaError, match=r"cudaEventRecord failed: cudaErrorInvalidResourceHandle: .*"
                                                r"destroyed or belongs to another device") as error:
        rt.check((E.cudaErrorInvalidResourceHandle,), "cudaEventRecord")
    assert not isinstance(error.value, MemoryError)


@pytest.mark.parametrize("err", [E.cudaErrorInsufficientDriver, E.cudaErrorNoDevice, E.cudaErrorStubLibrary])
def test_no_gpu_failures_are_device_unavailable(err):
    with pytest.raises(knetcnn.DeviceUnavailableError, match=r"cudaMalloc\(8 bytes\): no GPU is usable: "):
        rt.check((err, None), "cudaMalloc(8 bytes)", 0)


def _fake_cudart(monkeypatch, **calls):
    fake = types.SimpleNamespace(cudaGetDevice=lambda: (E.cudaSuccess, 0), cudaGetErrorString=cudart.cudaGetErrorString,
                                 cudaStreamLegacy=cudart.cudaStreamLegacy, **calls)
    monkeypatch.setattr(rt, "cudart", fake)


@pytest.mark.parametrize("result, done", [((E.cudaSuccess,), True), ((E.cudaErrorNotReady,), False)])
def test_event_query_reads_not_ready_as_pending(monkeypatch, result, done):
    _fake_cudart(monkeypatch, cudaEventQuery=lambda event: result)
    assert rt.event_query(0x10, 0) is done


def test_event_query_failures_raise(monkeypatch):
    _fake_cudart(monkeypatch, cudaEventQuery=lambda event: (E.cudaErrorLaunchFailure,))
    with pytest.raises(knetcnn.CudaError, match="cudaEventQuery failed: cudaErrorLaunchFailure"):
        rt.event_query(0x10, 0)


def test_naming_prefixes_cuda_failures_once_and_keeps_their_class():
    with pytest.raises(knetcnn.CudaMemoryError) as error:
        with rt.naming("conv4: x"):
            with rt.naming("conv4: x"):
                rt.check((E.cudaErrorMemoryAllocation, None), "cudaMalloc(8 bytes)", 0)
    assert str(error.value).startswith("conv4: x: cudaMalloc(8 bytes) failed: cudaErrorMemoryAllocation")
    assert error.value.code_name == "cudaErrorMemoryAllocation"
    with pytest.raises(knetcnn.DeviceUnavailableError, match="^pool: y: cudaMalloc: no GPU is usable"):
        with rt.naming("pool: y"):
            rt.check((E.cudaErrorNoDevice, None), "cudaMalloc", 0)
    with pytest.raises(ValueError, match="^plain$"):  # not a CUDA failure: left alone
        with rt.naming("pool: y"):
            raise ValueError("plain")


def test_known_device_count(monkeypatch):
    monkeypatch.setattr(rt, "_known_count", None)
    if NO_GPU:
        assert rt.known_device_count() is None
    counted = []
    monkeypatch.setattr(rt, "device_count", lambda: counted.append(1) or 3)
    assert rt.known_device_count() == 3 and rt.known_device_count() == 3 and counted == [1]  # cached


@pytest.mark.skipif(not NO_GPU, reason="checks the behaviour where no GPU is usable")
def test_calls_without_a_driver_say_why():
    for call in (lambda: rt.malloc(16, 0), lambda: rt.device_count(), lambda: rt.mem_get_info(0),
                 lambda: rt.make_stream_wait(5, 6, 0), lambda: rt.require_device(0, "conv4")):
        with pytest.raises(knetcnn.DeviceUnavailableError) as error:
            call()
        assert NO_GPU in str(error.value)
    assert rt.unavailable_reason(0) == NO_GPU


@pytest.mark.gpu
def test_gpu_wrappers_work():
    assert rt.device_count() >= 1
    ptr = rt.malloc(1 << 20, 0)
    try:
        free_bytes, total = rt.mem_get_info(0)
        assert 0 < free_bytes <= total
        assert rt.pointer_device(ptr) == (0, False)
        rt.memset_async(ptr, 0, 1 << 20, 0, 0)
        rt.stream_synchronize(0, 0)
        rt.make_stream_wait(2, 0, 0)  # per-thread default stream waits for the legacy one
        rt.make_stream_wait(0, 2, 0)  # the cached event, recorded again
        event = rt.event_create(0)
        rt.event_record(event, 0, 0)
        rt.stream_wait_event(2, event, 0)
        rt.event_synchronize(event, 0)
        assert rt.event_query(event, 0)
        rt.event_destroy(event, 0)
    finally:
        rt.free(ptr, 0)
