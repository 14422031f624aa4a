"""Stream ordering and lifetimes, against the simulated CUDA runtime (the `cuda` fixture), which
logs every ordering call: each test asserts the exact calls made, so a missing or misdirected
wait fails. Covers: producers' streams (CAI), KnetArray pending work as events (never a caller's
stream), the deferred release of inputs until our work completes, queued frees, and the CUDA
errors' context."""

import gc
import threading
import weakref

import numpy as np
import pytest

import knetcnn
from knetcnn import KnetArray
from knetcnn._core import core
from knetcnn.device import ArrayView, allocation, as_device_view, safepoints, streams
from knetcnn.device import cuda_runtime as rt

from fake_device_arrays import FakeCAIWithDevice, FakeDLPack, cai_of

NO_GPU = core.device_unavailable_reason(0)
REAL_MAKE_STREAM_WAIT = rt.make_stream_wait


def records(cuda):
    """(event, stream, device) of every event recorded so far."""
    return [entry[1:] for entry in cuda.calls("record")]


# --- producers' streams (CUDA Array Interface) ------------------------------------------------------

def test_no_ordering_without_a_producer_stream_or_on_the_same_stream(cuda):
    streams.order_after(5, None, 0)
    streams.order_after(5, 5, 0)
    streams.order_after(0, 1, 0)  # 0 and 1 are both the legacy default stream
    assert cuda.calls("make_stream_wait", "wait", "record") == []


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_ordering_two_streams_needs_cuda_and_says_why_without_it():
    with pytest.raises(knetcnn.DeviceUnavailableError, match="no GPU is usable"):
        streams.order_after(5, 6, 0)


def test_cai_on_another_stream_is_ordered_both_ways(cuda):
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=0x700))
    v = as_device_view(x, "conv4", "x", stream=0x800)
    assert cuda.calls("make_stream_wait") == [("make_stream_wait", 0x800, 0x700, 0)]  # ours waits for theirs
    v.release()
    ((event, stream, device),) = records(cuda)
    assert (stream, device) == (0x800, 0)
    assert cuda.calls("wait") == [("wait", 0x700, event, 0)]  # theirs waits for ours


@pytest.mark.parametrize("producer, consumer", [(0x700, 0x700), (1, 0)])
def test_cai_on_our_stream_needs_no_ordering(cuda, producer, consumer):
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=producer))
    v = as_device_view(x, "conv4", "x", stream=consumer)
    v.release()
    assert cuda.calls("make_stream_wait", "wait") == [] and [r[1:] for r in records(cuda)] == [(consumer, 0)]


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_cai_on_another_stream_without_a_gpu_says_where():
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=0x700))
    with pytest.raises(knetcnn.DeviceUnavailableError, match=r"^conv4: x: cuda\w+: no GPU is usable"):
        as_device_view(x, "conv4", "x", stream=0x800)


def test_cuda_failures_name_the_function_and_argument(cuda, monkeypatch):
    def failing(waiting, producer, device):
        rt.check((rt.cudart.cudaError_t.cudaErrorInvalidResourceHandle,), "cudaStreamWaitEvent", device)

    monkeypatch.setattr(rt, "make_stream_wait", failing)
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=0x700))
    with pytest.raises(knetcnn.CudaError, match=r"^conv4w: dy: cudaStreamWaitEvent failed: "
                                                r"cudaErrorInvalidResourceHandle") as error:
        as_device_view(x, "conv4w", "dy", stream=0x800)
    assert error.value.code_name == "cudaErrorInvalidResourceHandle"


# --- KnetArray: pending work as events ---------------------------------------------------------------

def test_knetarray_keeps_an_event_not_the_callers_stream(cuda):
    k = KnetArray(np.arange(6, dtype=np.float32))
    v = as_device_view(k, "conv4", "x", stream=0x9000)
    assert (v.source, v.owner, v.producer_stream, v.consumer_stream) == ("knetarray", k, None, 0x9000)
    v.release()
    ((event, stream, _),) = records(cuda)
    assert stream == 0x9000 and [e.handle for e in k._alloc.pending] == [event]
    kept = [getattr(k._alloc, name, None) for name in type(k._alloc).__slots__]
    assert 0x9000 not in kept and not hasattr(k._alloc, "pending_stream")  # no stream handle kept
    # The CAI export hands out the legacy stream made to wait for the event, never 0x9000.
    assert k.__cuda_array_interface__["stream"] == 1
    assert cuda.calls("wait") == [("wait", 0, event, 0)]


def test_later_work_waits_for_every_pending_writer(cuda):
    k = KnetArray(np.zeros(4, np.float32))
    for s in (0xA0, 0xB0, 0xC0):
        as_device_view(k, "conv4", "y", stream=s).release()
    assert [r[1] for r in records(cuda)] == [0xA0, 0xB0, 0xC0]
    events = [r[0] for r in records(cuda)]
    assert [w[1:3] for w in cuda.calls("wait")] == [(0xB0, events[0]), (0xC0, events[0]), (0xC0, events[1])]
    del cuda.log[:]
    as_device_view(k, "conv4", "x", stream=0xD0).release(enqueued=False)
    assert [w[1:3] for w in cuda.calls("wait")] == [(0xD0, e) for e in events]
    cuda.complete(stream=0xA0)
    del cuda.log[:]
    as_device_view(k, "conv4", "x", stream=0xD0).release(enqueued=False)
    assert [w[1:3] for w in cuda.calls("wait")] == [(0xD0, e) for e in events[1:]]  # completed ones are dropped


def test_pending_events_are_bounded(cuda):
    k = KnetArray(np.zeros(4, np.float32))
    for s in range(allocation.MAX_PENDING + 2):
        as_device_view(k, "conv4", "y", stream=0x100 + s).release()
    oldest = [r[0] for r in records(cuda)][:2]
    assert len(k._alloc.pending) == allocation.MAX_PENDING
    assert [c[1] for c in cuda.calls("synchronize")] == oldest  # waited for instead of kept


def test_get_waits_for_pending_work_and_copies(cuda):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    k = KnetArray(host)
    as_device_view(k, "conv4", "y", stream=0x9000).release()
    ((event, _, _),) = records(cuda)
    del cuda.log[:]
    np.testing.assert_array_equal(k.get(), host)
    assert cuda.log == [("synchronize", event, 0), ("memcpy", 24, 0, 0)]
    assert k._alloc.pending == [] and k.__cuda_array_interface__["stream"] is None


@pytest.mark.parametrize("stream, waiting", [(None, 0), (1, 1), (2, 2), (0x55, 0x55), (-1, None)])
def test_dlpack_consumers_wait_for_pending_work(cuda, stream, waiting):
    k = KnetArray(np.zeros(3, np.float32))
    as_device_view(k, "conv4", "y", stream=0x9000).release()
    ((event, _, _),) = records(cuda)
    k.__dlpack__(stream=stream)
    assert cuda.calls("wait") == ([] if waiting is None else [("wait", waiting, event, 0)])


def test_zeros_is_pending_work_on_the_legacy_stream(cuda):
    k = KnetArray.zeros((2, 2))
    ((event, stream, _),) = records(cuda)
    assert stream == 0 and [e.handle for e in k._alloc.pending] == [event]
    assert not k.get().any()


# --- deferred release ---------------------------------------------------------------------------------

def test_inputs_stay_alive_until_our_work_completes(cuda):
    # A temporary (as a JAX or PyTorch temporary would be) dropped right after the call.
    p = FakeDLPack(np.zeros(3, np.float32))
    ref = weakref.ref(p)
    v = as_device_view(p, "conv4", "x", stream=0x10)
    del p
    v.release()
    gc.collect()
    assert ref() is not None and ref().deleted == 0 and safepoints.pending() == 1
    as_device_view(KnetArray(np.zeros(1, np.float32)), "conv4", "w").release(enqueued=False)  # a safe point
    assert ref() is not None  # still running
    cuda.complete(stream=0x10)
    producer = ref()
    as_device_view(KnetArray(np.zeros(1, np.float32)), "conv4", "w").release(enqueued=False)
    assert producer.deleted == 1 and safepoints.pending() == 0
    del producer
    gc.collect()
    assert ref() is None


def test_a_knetarray_input_is_freed_only_after_our_work(cuda):
    k = KnetArray(np.zeros(4, np.float32))
    ptr = k.ptr
    v = as_device_view(k, "conv4", "x", stream=0x20)
    del k
    v.release()
    gc.collect()
    safepoints.drain()
    assert ptr not in cuda.freed
    cuda.complete()
    safepoints.drain()
    assert cuda.freed == [ptr]


def test_a_safe_point_stays_cheap_with_many_calls_in_flight(cuda, monkeypatch):
    producers = [FakeDLPack(np.zeros(1, np.float32)) for _ in range(50)]
    for p in producers:
        as_device_view(p, "conv4", "x", stream=0x60).release()
    queries = []
    monkeypatch.setattr(rt, "event_query", lambda event, device: queries.append(event) or cuda.event_query(event, device))
    safepoints.drain()
    assert len(queries) == safepoints.MAX_MISSES and safepoints.pending() == 50
    cuda.complete()
    safepoints.drain()
    assert safepoints.pending() == 0 and all(p.deleted == 1 for p in producers)


def test_collect_waits_for_everything(cuda):
    p = FakeDLPack(np.zeros(3, np.float32))
    as_device_view(p, "conv4", "x", stream=0x30).release()
    ((event, _, _),) = records(cuda)
    safepoints.collect()
    assert cuda.calls("synchronize") == [("synchronize", event, 0)] and p.deleted == 1


def test_a_main_thread_collection_is_a_safe_point(cuda):
    p = FakeDLPack(np.zeros(3, np.float32))
    as_device_view(p, "conv4", "x", stream=0x30).release()
    cuda.complete()
    gc.collect()
    assert p.deleted == 1


def test_nothing_to_wait_for_means_no_event(cuda):
    p = FakeDLPack(np.zeros(3, np.float32))
    as_device_view(p, "conv4", "x", stream=0x30).release(enqueued=False)  # e.g. an error before launch
    assert records(cuda) == [] and p.deleted == 1 and safepoints.pending() == 0


def test_an_event_that_cannot_be_recorded_strands_the_input(cuda, monkeypatch):
    # Without an event nothing can tell when the GPU is done: keeping the input beats freeing it early.
    def failing(event, stream, device):
        rt.check((rt.cudart.cudaError_t.cudaErrorLaunchFailure,), "cudaEventRecord", device)

    monkeypatch.setattr(rt, "event_record", failing)
    p = FakeDLPack(np.zeros(3, np.float32))
    v = as_device_view(p, "conv4", "x", stream=0x40)
    with pytest.raises(knetcnn.CudaError, match=r"^conv4: x: cudaEventRecord failed: cudaErrorLaunchFailure"):
        v.release()
    assert v.released and p.deleted == 0 and any(p in owners for owners, _ in safepoints._stranded)
    monkeypatch.setattr(safepoints, "_stranded", [])


# --- frees and event handles from finalizers -------------------------------------------------------

def test_a_finalizer_on_another_thread_makes_no_cuda_call(cuda):
    # E.g. the last reference dropped inside a CUDA host callback, where CUDA calls are forbidden.
    k = KnetArray(np.zeros(4, np.float32))
    ptr = k.ptr
    box = [k]
    del k
    worker = threading.Thread(target=box.clear)
    before = len(cuda.log)
    worker.start()
    worker.join()
    assert cuda.log[before:] == [] and ptr not in cuda.freed
    safepoints.drain()  # the next safe point frees it
    assert cuda.freed == [ptr]


def test_dropped_events_return_to_the_pool_without_cuda_calls(cuda):
    from knetcnn.device import events

    e = events.Event.record(0x50, 0)
    handle = e.handle
    before = len(cuda.log)
    del e
    gc.collect()
    assert cuda.log[before:] == [] and events._pool[0] == [handle]
    assert events.Event.record(0x51, 0).handle == handle  # reused, not created again


# --- make_stream_wait --------------------------------------------------------------------------------

def test_make_stream_wait_reuses_one_event_per_thread_and_device(cuda, monkeypatch):
    monkeypatch.setattr(rt, "make_stream_wait", REAL_MAKE_STREAM_WAIT)
    monkeypatch.setattr(rt, "_scratch", threading.local())
    monkeypatch.setattr(rt, "_spare", {})
    rt.make_stream_wait(0x1, 0x2, 0)
    rt.make_stream_wait(0x3, 0x4, 0)
    rt.make_stream_wait(0x5, 0x6, 1)
    (c0, c1) = [c[1] for c in cuda.calls("create")]
    assert cuda.calls("record", "wait") == [("record", c0, 0x2, 0), ("wait", 0x1, c0, 0),
                                            ("record", c0, 0x4, 0), ("wait", 0x3, c0, 0),
                                            ("record", c1, 0x6, 1), ("wait", 0x5, c1, 1)]


def test_scratch_events_of_finished_threads_are_reused(cuda, monkeypatch):
    monkeypatch.setattr(rt, "make_stream_wait", REAL_MAKE_STREAM_WAIT)
    monkeypatch.setattr(rt, "_scratch", threading.local())
    monkeypatch.setattr(rt, "_spare", {})
    for _ in range(5):  # short-lived threads, one after another
        worker = threading.Thread(target=rt.make_stream_wait, args=(0x1, 0x2, 0))
        worker.start()
        worker.join()
        gc.collect()
    assert len(cuda.calls("create")) == 1 and len(cuda.calls("record")) == 5


def test_make_stream_wait_reports_the_failing_call(cuda, monkeypatch):
    monkeypatch.setattr(rt, "make_stream_wait", REAL_MAKE_STREAM_WAIT)
    monkeypatch.setattr(rt, "_scratch", threading.local())
    monkeypatch.setattr(rt, "_spare", {})

    def failing(stream, event, device):
        rt.check((rt.cudart.cudaError_t.cudaErrorInvalidResourceHandle,), "cudaStreamWaitEvent", device)

    monkeypatch.setattr(rt, "stream_wait_event", failing)
    with pytest.raises(knetcnn.CudaError, match="^cudaStreamWaitEvent failed: cudaErrorInvalidResourceHandle"):
        rt.make_stream_wait(0x1, 0x2, 0)
    assert cuda.calls("destroy") == []  # the cached event is kept, not destroyed over the error


def test_release_without_a_device_array_view_needs_no_event(cuda):
    v = ArrayView(ptr=0, shape=(0, 4), strides=(4, 1), dtype="float32", device=0, owner=object())
    v.release()
    assert records(cuda) == [] and v.owner is None
