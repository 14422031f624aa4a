"""CUDA streams as the two protocols spell them, and ordering work between streams.

Internally a stream is the runtime's handle as an int: 0 is the legacy default stream.
``__cuda_array_interface__`` (v3) and ``__dlpack__(stream=...)`` share one spelling, in which 0
is disallowed (ambiguous), 1 is the legacy default stream, 2 the per-thread default stream and
any other positive int a ``cudaStream_t``. The runtime itself accepts 1 (``cudaStreamLegacy``)
and 2 (``cudaStreamPerThread``) as handles for those same streams, so protocol values >= 1 are
usable handles as they are; only our 0 needs spelling as 1 when handed to a protocol.
"""

from __future__ import annotations

import operator

from . import cuda_runtime

LEGACY = 0
PROTOCOL_LEGACY = 1
PROTOCOL_PER_THREAD = 2


def canonical(handle: int) -> int:
    """Handles 0 and 1 name the same (legacy default) stream."""
    return LEGACY if handle in (0, PROTOCOL_LEGACY) else handle


def same(a: int, b: int) -> bool:
    return canonical(a) == canonical(b)


def to_protocol(handle: int) -> int:
    """Our handle as the CAI ``stream`` entry / the ``stream=`` value for ``__dlpack__``."""
    return PROTOCOL_LEGACY if handle == LEGACY else handle


def as_handle(stream, function: str, argument: str = "stream") -> int:
    """A caller's stream as a handle: None (legacy default), a non-negative int, a CuPy stream
    (``.ptr``), a PyTorch stream (``.cuda_stream``), or a cuda-python ``cudaStream_t``/``CUstream``."""
    if stream is None:
        return LEGACY
    value = stream
    for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if not isinstance(stream, int) and hasattr(stream, attribute):
            value = getattr(stream, attribute)
            break
    if isinstance(value, (bool, float, str, bytes)):
        raise TypeError(f"{function}: {argument}={stream!r}: {argument} must be a stream or its handle, "
                        f"not a {type(value).__name__}")
    try:
        handle = operator.index(value)
    except TypeError:
        try:
            handle = int(value)  # cuda-python's cudaStream_t / CUstream convert with int()
        except (TypeError, ValueError):
            raise TypeError(
                f"{function}: {argument}={stream!r}: {argument} must be None (the legacy default stream), "
                "a stream handle (int), a CuPy or PyTorch stream, or a cuda-python cudaStream_t"
            ) from None
    if handle < 0:
        raise ValueError(f"{function}: {argument}={stream!r}: a stream handle must be >= 0")
    return handle


def from_protocol(value, function: str, argument: str, protocol: str) -> int | None:
    """The producer's stream from a CAI ``stream`` entry: None (no synchronization needed) or a handle."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{function}: {argument} has {protocol} stream={value!r}: the stream entry must be None or an int"
        )
    if value == 0:
        raise ValueError(
            f"{function}: {argument} has {protocol} stream=0, which the interface disallows as ambiguous "
            "(its producer must say None, 1 for the legacy or 2 for the per-thread default stream)"
        )
    if value < 0:
        raise ValueError(f"{function}: {argument} has {protocol} stream={value}: a stream handle must be positive")
    return value


def order_after(consumer: int, producer: int | None, device: int) -> None:
    """Make work enqueued from now on ``consumer`` wait for the work already on ``producer``.

    Nothing to do (and no CUDA call) when there is no producer stream or it is the same stream.
    """
    if producer is None or same(consumer, producer):
        return
    cuda_runtime.make_stream_wait(consumer, producer, device)
