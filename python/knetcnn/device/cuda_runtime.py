"""Checked wrappers over cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``).

cuda-python returns ``(err, value...)`` tuples and imports fine without a driver; every call
here checks ``err``. Where the failure means no GPU is usable (no driver, no device) it raises
:class:`knetcnn.DeviceUnavailableError` with the core's reason and what to do; other failures
raise :class:`knetcnn.CudaError` (``CudaMemoryError`` when out of memory) naming the call.
Pointers, streams and events are plain Python ints (stream 0 is the legacy default stream).

:func:`naming` prefixes failures with the knetcnn function and argument they were reached from
("conv4: x: cudaEventRecord failed: ...").
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from cuda.bindings import runtime as cudart

from .._core import core
from .._errors import CudaError, DeviceUnavailableError, cuda_error

_E = cudart.cudaError_t
# Failures that mean "there is no usable GPU" rather than "this call went wrong".
_NO_GPU_ERRORS = {
    _E.cudaErrorInsufficientDriver, _E.cudaErrorNoDevice, _E.cudaErrorStubLibrary,
    _E.cudaErrorSystemDriverMismatch, _E.cudaErrorDevicesUnavailable, _E.cudaErrorInitializationError,
    _E.cudaErrorCallRequiresNewerDriver, _E.cudaErrorSystemNotReady,
}
_ADVICE = {
    _E.cudaErrorMemoryAllocation: "free device memory (drop arrays you no longer need) or use smaller arrays",
    _E.cudaErrorInvalidValue: "this is a bug in knetcnn or in the array's producer; please report it",
    _E.cudaErrorInvalidResourceHandle: "the stream or event was destroyed or belongs to another device",
    _E.cudaErrorInvalidDevice: "pass a device index below the number of visible GPUs (see python -m knetcnn info)",
}

LEGACY_STREAM = 0  # our handle for the legacy default stream (cudaStreamLegacy == 1 is the same stream)
MEMCPY_H2D = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
MEMCPY_D2H = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
MEMCPY_D2D = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice


def _stream(handle: int) -> int:
    """Handle 0 passed explicitly as cudaStreamLegacy: cuda-python reads a bare 0 as the per-thread
    stream when CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM is set, and 0 means legacy to us."""
    return int(cudart.cudaStreamLegacy) if handle == LEGACY_STREAM else handle


def unavailable_reason(device: int = 0) -> str:
    """'' when ``device`` can run work, otherwise why not and how to fix it."""
    return core.device_unavailable_reason(device)


def require_device(device: int = 0, function: str = "knetcnn") -> None:
    """Raise DeviceUnavailableError (with the reason) unless ``device`` is usable."""
    reason = unavailable_reason(device)
    if reason:
        raise DeviceUnavailableError(f"{function}: no GPU is usable: {reason}")


def check(result: tuple, call: str, device: int | None = None):
    """Unpack a cuda-python result tuple: the value(s) on success, else raise."""
    err = result[0]
    if err == _E.cudaSuccess:
        if len(result) == 1:
            return None
        return result[1] if len(result) == 2 else result[1:]
    _raise(err, call, device)


def _raise(err, call: str, device: int | None):
    name = getattr(err, "name", str(err))
    _, text = cudart.cudaGetErrorString(err)
    text = text.decode() if isinstance(text, bytes) else str(text)
    if err in _NO_GPU_ERRORS:
        reason = unavailable_reason(0 if device is None else device) or f"{name}: {text}"
        raise DeviceUnavailableError(f"{call}: no GPU is usable: {reason}")
    advice = _ADVICE.get(err, "see python -m knetcnn info for the driver and devices in use")
    raise cuda_error(f"{call} failed: {name}: {text}; {advice}", int(err), name)


@contextlib.contextmanager
def naming(where: str) -> Iterator[None]:
    """Prefix CUDA failures raised in the block with ``where`` ("conv4: x"), keeping their class."""
    try:
        yield
    except (CudaError, DeviceUnavailableError) as error:
        if error.args and isinstance(error.args[0], str) and not error.args[0].startswith(f"{where}: "):
            error.args = (f"{where}: {error.args[0]}",) + error.args[1:]
        raise


def device_count() -> int:
    return check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")


_known_count: int | None = None


def known_device_count() -> int | None:
    """The number of visible GPUs, or None where none is usable (then no ordinal can be checked
    against hardware). A success is cached: the visible set is fixed once CUDA is initialized."""
    global _known_count
    if _known_count is None:
        try:
            _known_count = device_count()
        except (DeviceUnavailableError, CudaError):
            return None
    return _known_count


def get_device() -> int:
    return check(cudart.cudaGetDevice(), "cudaGetDevice")


def set_device(device: int) -> None:
    check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})", device)


@contextlib.contextmanager
def using_device(device: int) -> Iterator[None]:
    """Make ``device`` current for the block and restore the previous one afterwards."""
    previous = get_device()
    if previous != device:
        set_device(device)
    try:
        yield
    finally:
        if previous != device:
            set_device(previous)


def malloc(nbytes: int, device: int) -> int:
    with using_device(device):
        return int(check(cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes) on device {device}", device))


def free(ptr: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaFree(ptr), f"cudaFree on device {device}", device)


def memcpy(dst: int, src: int, nbytes: int, kind, stream: int, device: int) -> None:
    """Copy on ``stream`` and wait for it: returns once the bytes are in place."""
    with using_device(device):
        check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, _stream(stream)), f"cudaMemcpyAsync({nbytes} bytes)",
              device)
        check(cudart.cudaStreamSynchronize(_stream(stream)), "cudaStreamSynchronize", device)


def memset_async(ptr: int, value: int, nbytes: int, stream: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaMemsetAsync(ptr, value, nbytes, _stream(stream)), f"cudaMemsetAsync({nbytes} bytes)", device)


def stream_synchronize(stream: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaStreamSynchronize(_stream(stream)), "cudaStreamSynchronize", device)


def event_create(device: int) -> int:
    """A new event without timing (cheaper to record and wait on)."""
    with using_device(device):
        return int(check(cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming),
                         "cudaEventCreateWithFlags", device))


def event_record(event: int, stream: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaEventRecord(event, _stream(stream)), "cudaEventRecord", device)


def event_query(event: int, device: int) -> bool:
    """Whether all work the event captured has completed (cudaErrorNotReady is not a failure)."""
    with using_device(device):
        result = cudart.cudaEventQuery(event)
    if result[0] == _E.cudaErrorNotReady:
        return False
    check(result, "cudaEventQuery", device)
    return True


def event_synchronize(event: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaEventSynchronize(event), "cudaEventSynchronize", device)


def event_destroy(event: int, device: int) -> None:
    with using_device(device):
        check(cudart.cudaEventDestroy(event), "cudaEventDestroy", device)


def stream_wait_event(stream: int, event: int, device: int) -> None:
    """Work enqueued on ``stream`` from now on waits for what ``event`` captured."""
    with using_device(device):
        check(cudart.cudaStreamWaitEvent(_stream(stream), event, 0), "cudaStreamWaitEvent", device)


# One scratch event per (thread, device) for make_stream_wait: a wait captures the event's state
# when it is enqueued, so re-recording is safe; per thread, so two threads never interleave
# record/wait on one event. When a thread ends its events go to a spare list (no CUDA call
# there) for the next thread, so a pool of short-lived threads does not leak events.
_scratch = threading.local()
_spare: dict[int, list[int]] = {}


class _ScratchEvent:
    __slots__ = ("handle", "device", "spare")

    def __init__(self, device: int):
        self.spare = _spare  # the list in force now: a handle only returns to where it came from
        free = self.spare.get(device)
        self.handle = free.pop() if free else event_create(device)
        self.device = device

    def __del__(self):
        if hasattr(self, "handle"):  # not when event_create failed
            self.spare.setdefault(self.device, []).append(self.handle)


def _scratch_event(device: int) -> int:
    events = _scratch.__dict__.setdefault("events", {})
    if device not in events:
        events[device] = _ScratchEvent(device)
    return events[device].handle


def make_stream_wait(waiting: int, producer: int, device: int) -> None:
    """Enqueue on ``waiting`` a wait for all work enqueued so far on ``producer``."""
    event = _scratch_event(device)
    event_record(event, producer, device)
    stream_wait_event(waiting, event, device)


def mem_get_info(device: int) -> tuple[int, int]:
    """(free, total) bytes on ``device``."""
    with using_device(device):
        free_bytes, total = check(cudart.cudaMemGetInfo(), "cudaMemGetInfo", device)
    return int(free_bytes), int(total)


def pointer_device(ptr: int) -> tuple[int, bool]:
    """(device ordinal, is managed memory) of a device pointer."""
    attrs = check(cudart.cudaPointerGetAttributes(ptr), "cudaPointerGetAttributes")
    managed = attrs.type == cudart.cudaMemoryType.cudaMemoryTypeManaged
    if attrs.type not in (cudart.cudaMemoryType.cudaMemoryTypeDevice, cudart.cudaMemoryType.cudaMemoryTypeManaged):
        raise ValueError(f"pointer {ptr:#x} is not device memory (CUDA memory type {attrs.type.name})")
    return int(attrs.device), managed
