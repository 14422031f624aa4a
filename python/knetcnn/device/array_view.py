"""ArrayView: one description of a device array, whatever protocol it came through.

The dispatcher works from views only. A view holds what keeps the memory alive (the producer's
object, a KnetArray, or an imported DLPack tensor whose deleter has not run yet). Once the work
on the view has been enqueued, ``release(stream)`` must be called: it records a knetcnn-owned
event on that stream, orders later work of the producer after it, and keeps the owner alive
until the event completes (see ``safepoints``); only then does a DLPack deleter run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from . import cuda_runtime as rt
from . import events, safepoints, streams
from .dtypes import ITEMSIZE


@dataclass(eq=False)
class ArrayView:
    ptr: int  # device address of element [0, ..., 0] (DLPack byte_offset already added)
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements, not bytes
    dtype: str  # "float16", "float32", "float64" or "bfloat16"
    device: int  # CUDA device ordinal
    readonly: bool = False
    producer_stream: int | None = None  # the producer's stream for this call only; never kept past release
    consumer_stream: int = 0  # the stream this view was prepared for (0: legacy default)
    owner: Any = None  # keeps the memory alive until our work on it has completed
    source: str = ""  # "knetarray", "cuda_array_interface" or "dlpack"
    managed: bool = False  # CUDA managed (unified) memory
    deliver_as: str | None = None  # results.finalize_result: convert the KnetArray for this library
    where: str = ""  # "conv4: x", prefixed to CUDA failures on release
    # Run on release with (used stream, event recorded there after our work): ordering only.
    _on_release: list[Callable[[int, Any], None]] = field(default_factory=list, repr=False)
    # Run once our work has completed (or at once if none was enqueued): e.g. a DLPack deleter.
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def byte_strides(self) -> tuple[int, ...]:
        return tuple(s * self.itemsize for s in self.strides)

    @property
    def is_c_contiguous(self) -> bool:
        return self.strides == c_contiguous_strides(self.shape)

    @property
    def released(self) -> bool:
        return self._released

    def release(self, stream=None, *, enqueued: bool = True) -> None:
        """Call once the work using this view is enqueued on ``stream`` (a handle or stream object;
        default: the stream the view was prepared for), or with ``enqueued=False`` when none was
        (an error before launch).

        Records a knetcnn-owned event on ``stream``; the release hooks order later work after it
        (the producer's stream, the caller library's current stream, a KnetArray's pending
        work); the owner and the closers (DLPack deleters) are kept until the event completes and
        dropped at a later safe point (see ``safepoints``). Without enqueued work everything is
        dropped at once and no CUDA call is made. Idempotent. May raise CudaError (prefixed with
        ``where``) if recording or ordering fails; everything is still released safely.
        """
        if self._released:
            return
        self._released = True
        used = self.consumer_stream if stream is None else streams.as_handle(stream, self.where or "release")
        hooks, self._on_release = self._on_release, []
        closers, self._closers = tuple(self._closers), []
        owners, self.owner = (self.owner,), None
        if not enqueued or self.size == 0:  # no work reads or writes it: nothing to wait for
            _close_now(closers)
            return
        first_error = None
        try:
            with rt.naming(self.where or "release"):
                event = events.Event.record(used, self.device)
        except Exception:
            safepoints.strand(owners, closers)
            raise
        for hook in hooks:  # all of them, even if one fails
            try:
                with rt.naming(self.where or "release"):
                    hook(used, event)
            except Exception as error:
                first_error = first_error or error
        safepoints.keep_until(event, owners, closers)
        if first_error is not None:
            raise first_error


def _close_now(closers) -> None:
    first_error = None
    for close in closers:
        try:
            close()
        except Exception as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def c_contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous (row-major) array of ``shape``."""
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def canonical_strides(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...]:
    """Strides with those of extent-1 axes replaced by their C-contiguous value.

    A stride on an axis of extent 1 is never used to address anything (PyTorch reports arbitrary
    ones there), so this makes contiguity checks exact without changing what is addressed.
    """
    c = c_contiguous_strides(shape)
    return tuple(c[i] if shape[i] == 1 else strides[i] for i in range(len(shape)))
