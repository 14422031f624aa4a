"""A stand-in for ``knetcnn.device.cuda_runtime`` so that ordering and lifetimes can be tested
without a GPU: "device memory" is host memory, streams are plain ints, events complete only when
the test says so, and every ordering call is logged.

This simulates the documented contract of the CUDA runtime calls knetcnn makes; it says nothing
about how a real GPU behaves.
"""

from __future__ import annotations

import ctypes
import gc

import pytest

from knetcnn.device import cuda_runtime as rt
from knetcnn.device import events as events_module
from knetcnn.device import safepoints


class FakeCuda:
    def __init__(self, devices: int = 2):
        self.devices = devices
        self.current = 0
        self.log: list[tuple] = []  # ("record", event, stream, device), ("wait", stream, event, device), ...
        self.events: dict[int, dict] = {}  # handle -> {"device", "done", "stream"}
        self.buffers: dict[int, ctypes.Array] = {}
        self.freed: list[int] = []
        self._next = 0xE000
        self.pointer_devices: dict[int, tuple[int, bool]] = {}  # ptr -> (device, managed), for pointer_device

    # --- devices ------------------------------------------------------------------------------
    def device_count(self):
        return self.devices

    def get_device(self):
        return self.current

    def set_device(self, device):
        if not 0 <= device < self.devices:
            raise AssertionError(f"set_device({device}) with {self.devices} devices")
        self.log.append(("set_device", device))
        self.current = device

    # --- memory (host memory standing in for device memory) -------------------------------------
    def malloc(self, nbytes, device):
        buffer = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(buffer)
        self.buffers[ptr] = buffer
        self.pointer_devices[ptr] = (device, False)
        self.log.append(("malloc", nbytes, device))
        return ptr

    def free(self, ptr, device):
        self.log.append(("free", ptr, device))
        self.freed.append(ptr)
        self.buffers.pop(ptr)

    def memcpy(self, dst, src, nbytes, kind, stream, device):
        self.log.append(("memcpy", nbytes, stream, device))
        ctypes.memmove(dst, src, nbytes)

    def memset_async(self, ptr, value, nbytes, stream, device):
        self.log.append(("memset", nbytes, stream, device))
        ctypes.memset(ptr, value, nbytes)

    def pointer_device(self, ptr):
        """What cudaPointerGetAttributes would say: registered pointers as registered (None: host
        memory), any other on the current device."""
        self.log.append(("pointer_device", ptr))
        found = self.pointer_devices.get(ptr, (self.current, False))
        if found is None:
            raise ValueError(f"pointer {ptr:#x} is not device memory (CUDA memory type cudaMemoryTypeUnregistered)")
        return found

    # --- events and streams ---------------------------------------------------------------------
    def event_create(self, device):
        self._next += 0x10
        self.events[self._next] = {"device": device, "done": True, "stream": None}
        self.log.append(("create", self._next, device))
        return self._next

    def event_record(self, event, stream, device):
        assert self.events[event]["device"] == device, "an event recorded on another device's stream"
        self.events[event].update(done=False, stream=stream)
        self.log.append(("record", event, stream, device))

    def event_query(self, event, device):
        return self.events[event]["done"]

    def event_synchronize(self, event, device):
        self.log.append(("synchronize", event, device))
        self.events[event]["done"] = True

    def event_destroy(self, event, device):
        self.log.append(("destroy", event, device))
        del self.events[event]

    def stream_wait_event(self, stream, event, device):
        self.log.append(("wait", stream, event, device))

    def stream_synchronize(self, stream, device):
        self.log.append(("stream_synchronize", stream, device))

    def make_stream_wait(self, waiting, producer, device):
        self.log.append(("make_stream_wait", waiting, producer, device))

    # --- for the tests --------------------------------------------------------------------------
    def complete(self, stream=None) -> None:
        """Mark recorded events done: all of them, or those recorded on ``stream``."""
        for event in self.events.values():
            if stream is None or event["stream"] == stream:
                event["done"] = True

    def calls(self, *kinds) -> list[tuple]:
        return [entry for entry in self.log if entry[0] in kinds]

    def install(self, monkeypatch) -> "FakeCuda":
        for name in ("device_count", "get_device", "set_device", "malloc", "free", "memcpy", "memset_async",
                     "pointer_device", "event_create", "event_record", "event_query", "event_synchronize",
                     "event_destroy", "stream_wait_event", "stream_synchronize", "make_stream_wait"):
            monkeypatch.setattr(rt, name, getattr(self, name))
        monkeypatch.setattr(rt, "_known_count", None)
        monkeypatch.setattr(rt, "require_device", lambda device=0, function="knetcnn": None)
        monkeypatch.setattr(rt, "unavailable_reason", lambda device=0: "")
        monkeypatch.setattr(events_module, "_pool", {})  # no real handles from an earlier test
        return self


@pytest.fixture
def cuda(monkeypatch):
    """A FakeCuda installed for the test; the safe-point queues start and end empty."""
    safepoints.drain()
    fake = FakeCuda().install(monkeypatch)
    with safepoints._lock:
        kept, safepoints._kept[:] = list(safepoints._kept), []
    yield fake
    gc.collect()  # finalizers of this test's objects run against the fake, not a real runtime
    fake.complete()
    safepoints.drain()
    for obj in gc.get_objects():  # survivors (a failed test's traceback): never query a fake handle for real
        if isinstance(obj, events_module.Event) and obj.handle in fake.events:
            obj._done = True
    with safepoints._lock:
        safepoints._kept[:] = kept
