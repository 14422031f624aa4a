"""knetcnn-owned CUDA events: the record of "our work up to here" that outlives the call.

Only events are kept past a call, never a caller's stream handle: a stream may be destroyed as
soon as the call returns (and its handle reused), while an event we created stays valid until we
drop it. An event may be waited on from any stream and queried from the host at any time.

A dropped Event goes back to a small per-device pool without any CUDA call, because the last
reference may be dropped on any thread, including inside a CUDA host callback where CUDA calls
are forbidden; handles beyond the pool are destroyed at the next safe point (see ``safepoints``).
"""

from __future__ import annotations

import threading
import weakref

from . import cuda_runtime as rt
from . import safepoints

POOL_SIZE = 32  # idle handles kept per device
_pool: dict[int, list[int]] = {}
_pool_lock = threading.Lock()


def _take(device: int) -> int:
    with _pool_lock:
        free = _pool.get(device)
        if free:
            return free.pop()
    return rt.event_create(device)


def _give_back(handle: int, device: int, pool: dict, destroy) -> None:
    """Finalizer: no CUDA call here (see the module docstring). ``pool`` and ``destroy`` are
    those in force when the event was made, so a handle only ever returns to where it came from."""
    with _pool_lock:
        free = pool.setdefault(device, [])
        if len(free) < POOL_SIZE:
            free.append(handle)
            return
    safepoints.defer_cleanup(destroy, handle, device)


class Event:
    """An event recorded on a stream of ``device``: it completes when the work enqueued on that
    stream before the record has completed."""

    __slots__ = ("handle", "device", "_done", "__weakref__")

    def __init__(self, handle: int, device: int):
        self.handle, self.device, self._done = handle, device, False
        weakref.finalize(self, _give_back, handle, device, _pool, rt.event_destroy).atexit = False

    @classmethod
    def record(cls, stream: int, device: int) -> "Event":
        handle = _take(device)
        try:
            rt.event_record(handle, stream, device)
        except BaseException:
            _give_back(handle, device, _pool, rt.event_destroy)
            raise
        return cls(handle, device)

    def done(self) -> bool:
        """Whether the captured work has completed (remembered once true: no more CUDA calls)."""
        if not self._done:
            self._done = rt.event_query(self.handle, self.device)
        return self._done

    def wait_on(self, stream: int) -> None:
        """Make work enqueued on ``stream`` from now on wait for this event (nothing if done)."""
        if not self._done:
            rt.stream_wait_event(stream, self.handle, self.device)

    def synchronize(self) -> None:
        """Block the host until the captured work has completed."""
        if not self._done:
            rt.event_synchronize(self.handle, self.device)
            self._done = True

    def __repr__(self) -> str:
        return f"Event(handle={self.handle:#x}, device={self.device}, done={self._done})"
