"""Device memory of a KnetArray: one cudaMalloc block, and the work pending on it.

Pending work is kept as knetcnn-owned CUDA events (never a caller's stream handle, which may be
destroyed once a call returns): the work knetcnn enqueued on the memory and has not yet seen
complete. When the last reference goes, the free is queued for the next safe point (a finalizer
may run inside a CUDA callback, where CUDA calls are forbidden) and waits for that work first.
"""

from __future__ import annotations

import sys
import weakref

from . import cuda_runtime as rt
from . import events, safepoints

MAX_PENDING = 8  # events kept per allocation; beyond that the oldest is waited for


def _free_now(ptr: int, device: int, pending: list) -> None:
    """At a safe point: wait for work still using the memory, then cudaFree."""
    for event in pending:
        event.synchronize()
    rt.free(ptr, device)


def _free(ptr: int, device: int, pending: list) -> None:
    """Finalizer: must never raise, and never call CUDA (it may run inside a CUDA callback)."""
    if not sys.is_finalizing():
        safepoints.defer_cleanup(_free_now, ptr, device, pending)


class Allocation:
    """One cudaMalloc block, shared by a KnetArray and its reshaped views."""

    __slots__ = ("ptr", "nbytes", "device", "pending", "owner", "_finalizer", "__weakref__")

    def __init__(self, ptr: int, nbytes: int, device: int, owns: bool, owner=None):
        self.ptr, self.nbytes, self.device = ptr, nbytes, device
        self.owner = owner  # for memory this allocation does not own: what keeps it alive
        self.pending: list[events.Event] = []  # our work on this memory not yet seen complete
        self._finalizer = None
        if owns and ptr:
            self._finalizer = weakref.finalize(self, _free, ptr, device, self.pending)
            self._finalizer.atexit = False

    def outstanding(self) -> list[events.Event]:
        """The pending events, after dropping those that have completed."""
        self.pending[:] = [e for e in self.pending if not e.done()]
        return list(self.pending)

    def add(self, event: events.Event) -> None:
        """Record new work on this memory; keeps at most MAX_PENDING events (waits for the oldest)."""
        self.outstanding()
        self.pending.append(event)
        while len(self.pending) > MAX_PENDING:
            self.pending.pop(0).synchronize()

    def order(self, stream: int) -> None:
        """Make work enqueued on ``stream`` from now on wait for all pending work."""
        for event in self.outstanding():
            event.wait_on(stream)

    def wait(self) -> None:
        """Block until all pending work has completed."""
        for event in self.outstanding():
            event.synchronize()
        self.pending.clear()


def new_allocation(nbytes: int, device: int) -> Allocation:
    ptr = rt.malloc(nbytes, device) if nbytes else 0
    return Allocation(ptr, nbytes, device, owns=True)
