"""Work postponed to a safe point: inputs kept alive until our GPU work on them completes, and
CUDA cleanups requested by finalizers.

Why inputs are kept: knetcnn enqueues work and returns at once. Dropping an input's owner then
(calling a DLPack deleter, letting a temporary go) would let its library free or reuse the memory
while our kernels still read it. So ``ArrayView.release`` records a knetcnn-owned event on the
work stream and hands the owner here; it is dropped once the event reports completion (the same
idea as PyTorch's ``Tensor.record_stream``).

Why cleanups are queued: a finalizer runs on whatever thread drops the last reference, possibly
inside a CUDA host callback, where CUDA calls are forbidden. So finalizers only queue their CUDA
call (``cudaFree``, ``cudaEventDestroy``) here.

Safe points, where the queue runs and completed entries are dropped (without waiting): every
entry into the device layer (``as_device_view``, ``allocate_like``, KnetArray construction and
``get``), a garbage collection on the main thread (never a CUDA callback thread), and
:func:`collect`. At interpreter exit everything still pending is waited for and dropped.
"""

from __future__ import annotations

import atexit
import collections
import gc
import sys
import threading
from typing import Any, Callable

_lock = threading.Lock()
_kept: list[tuple[Any, tuple, tuple[Callable[[], None], ...]]] = []  # (event, owners, closers)
_stranded: list[tuple] = []  # owners whose work could not be tracked: kept until exit
_cleanups: collections.deque = collections.deque()  # (function, args); deque appends are thread-safe


def keep_until(event, owners: tuple, closers: tuple = ()) -> None:
    """Keep ``owners`` alive, and call ``closers`` (e.g. DLPack deleters), once ``event`` is done."""
    with _lock:
        _kept.append((event, tuple(owners), tuple(closers)))


def strand(owners: tuple, closers: tuple = ()) -> None:
    """Keep ``owners`` until the process ends: their work was enqueued but no event could be
    recorded, so nothing can tell when it is safe to let them go (leaking beats a use-after-free)."""
    with _lock:
        _stranded.append((tuple(owners), tuple(closers)))


def defer_cleanup(function: Callable, *args) -> None:
    """Run ``function(*args)`` (a CUDA cleanup) at the next safe point. Never calls CUDA itself."""
    _cleanups.append((function, args))


def pending() -> int:
    """Entries still waiting for their event (for tests and diagnostics)."""
    with _lock:
        return len(_kept)


def drain(wait: bool = False) -> None:
    """A safe point: drop every kept entry whose event is done (with ``wait``, wait for all of
    them first), then run queued cleanups, including the frees that dropping those entries
    queued. Errors are swallowed: a failing query keeps its entry (leaking beats freeing early)."""
    if _kept:  # the common case skips this: no lock, no CUDA call
        _drop_finished(wait)
    while _cleanups:
        function, args = _cleanups.popleft()
        try:
            function(*args)
        except Exception:  # context gone or driver torn down: nothing can be done about it here
            pass


MAX_MISSES = 8  # a drain without waiting stops after this many entries still running


def _take_finished(wait: bool) -> list:
    """Remove and return the kept entries whose event is done. Entries are in the order their
    work was enqueued, so once several are still running the later ones almost surely are too:
    the scan stops there, keeping a safe point cheap while many calls are in flight."""
    with _lock:
        entries = list(_kept)
    finished, misses = [], 0
    for entry in entries:
        try:
            if wait:
                entry[0].synchronize()
            if entry[0].done():
                finished.append(entry)
            else:
                misses += 1
        except Exception:
            misses += 1
        if misses >= MAX_MISSES:
            break
    if finished:
        with _lock:
            ids = {id(e) for e in finished}
            _kept[:] = [e for e in _kept if id(e) not in ids]
    return finished


def _drop_finished(wait: bool) -> None:
    finished = _take_finished(wait)
    closers = [close for entry in finished for close in entry[2]]
    del finished  # drops the owners now, so that the frees they queue run in this safe point
    for close in closers:  # outside the lock: a deleter may reach a safe point itself
        try:
            close()
        except Exception:
            pass


def collect() -> None:
    """Wait for all knetcnn work that still holds inputs, then drop them and run queued frees."""
    drain(wait=True)


def _on_gc(phase: str, info: dict) -> None:
    # Only on the main thread: CUDA host callbacks run on a driver thread, never this one.
    if sys.is_finalizing() or phase != "stop" or not (_kept or _cleanups):
        return
    if threading.current_thread() is threading.main_thread():
        if _lock.locked():
            return  # a drain on this thread is mid-way (a collection inside it): leave it be
        drain()


def _at_exit() -> None:
    if not sys.is_finalizing():
        drain(wait=True)


gc.callbacks.append(_on_gc)
atexit.register(_at_exit)
