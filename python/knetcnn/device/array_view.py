"""ArrayView: one description of a device array, whatever protocol it came through.

The dispatcher works from views only. A view holds a reference that keeps the memory alive
(the producer's object, a KnetArray, or an imported DLPack tensor whose deleter has not run yet)
and the producer's stream, if the producer named one. When the work on the view has been
enqueued on the consumer's stream, ``release(stream)`` must be called: it orders the producer's
later work after ours and lets the memory go (for DLPack, by calling the deleter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .dtypes import ITEMSIZE


@dataclass(eq=False)
class ArrayView:
    ptr: int  # device address of element [0, ..., 0] (DLPack byte_offset already added)
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements, not bytes
    dtype: str  # "float16", "float32", "float64" or "bfloat16"
    device: int  # CUDA device ordinal
    readonly: bool = False
    producer_stream: int | None = None  # runtime stream handle the producer may still be using
    consumer_stream: int = 0  # the stream this view was prepared for (0: legacy default)
    owner: Any = None  # keeps the memory alive until release()
    source: str = ""  # "knetarray", "cuda_array_interface" or "dlpack"
    managed: bool = False  # CUDA managed (unified) memory
    deliver_as: str | None = None  # results.finalize_result: convert the KnetArray for this library
    _on_release: list[Callable[[int], None]] = field(default_factory=list, repr=False)
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

    def release(self, stream: int | None = None) -> None:
        """Call once the work using this view is enqueued on ``stream`` (default: the stream it
        was prepared for). Idempotent. May raise CudaError if ordering the producer fails."""
        if self._released:
            return
        self._released = True
        used = self.consumer_stream if stream is None else stream
        hooks, self._on_release = self._on_release, []
        first_error = None
        for hook in hooks:  # all of them, even if one fails: a skipped DLPack deleter would leak
            try:
                hook(used)
            except Exception as error:
                first_error = first_error or error
        self.owner = None
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
