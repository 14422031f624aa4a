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


MAX_HANDLE = 2**64  # a cudaStream_t is a 64-bit pointer


def _bounded(handle: int, function: str, argument: str, shown) -> int:
    if not 0 <= handle < MAX_HANDLE:
        raise ValueError(f"{function}: {argument}={shown!r}: a stream handle must be >= 0 and < 2**64")
    return handle


def _library_stream_handle(stream):
    """The handle of a stream object from a library we know, found by its class (or a base
    class); None when it is none of them. Matching by class, not by a ``.ptr`` attribute, keeps
    a CuPy MemoryPointer or a KnetArray (which have ``.ptr``) from passing for a stream."""
    for klass in type(stream).__mro__:
        module, name = getattr(klass, "__module__", "") or "", klass.__name__
        root = module.split(".")[0]
        if root in ("cupy", "cupy_backends") and name.endswith("Stream"):
            return stream.ptr  # cupy.cuda.Stream / ExternalStream
        if root == "torch" and "Stream" in name and hasattr(stream, "cuda_stream"):
            return stream.cuda_stream  # torch.cuda.Stream / ExternalStream
        if root in ("numba", "numba_cuda") and name == "Stream":
            handle = stream.handle  # a ctypes c_void_p, or a cuda-python CUstream
            return (handle.value or 0) if hasattr(handle, "value") else int(handle)
        if root == "cuda" and name in ("cudaStream_t", "CUstream"):
            return int(stream)  # cuda-python's runtime / driver stream handles
    return None


def as_handle(stream, function: str, argument: str = "stream") -> int:
    """A caller's stream as a handle: None (legacy default), an int (0 <= handle < 2**64), an
    object with the ``__cuda_stream__`` protocol, a CuPy, PyTorch or Numba stream, or a
    cuda-python ``cudaStream_t``/``CUstream``. Anything else is a TypeError."""
    if stream is None:
        return LEGACY
    if isinstance(stream, (bool, float, str, bytes)):
        raise TypeError(f"{function}: {argument}={stream!r}: {argument} must be a stream or its handle, "
                        f"not a {type(stream).__name__}")
    if hasattr(type(stream), "__index__"):  # int, numpy integers
        return _bounded(operator.index(stream), function, argument, stream)
    protocol = getattr(type(stream), "__cuda_stream__", None)
    if protocol is not None:
        value = protocol(stream)  # (version, handle), version 0
        if (not isinstance(value, tuple) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise TypeError(f"{function}: {argument}={stream!r}: __cuda_stream__() returned {value!r}, "
                            "not a (version, handle) pair of ints")
        return _bounded(value[1], function, argument, stream)
    handle = _library_stream_handle(stream)
    if handle is None:
        raise TypeError(
            f"{function}: {argument}={stream!r}: {argument} must be None (the legacy default stream), a stream "
            "handle (int), an object with __cuda_stream__, a CuPy, PyTorch or Numba stream, or a cuda-python "
            f"cudaStream_t/CUstream, not a {type(stream).__name__}"
        )
    return _bounded(operator.index(handle), function, argument, stream)


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
    if not 0 < value < MAX_HANDLE:
        raise ValueError(f"{function}: {argument} has {protocol} stream={value}: a stream handle must be "
                         "positive and < 2**64")
    return value


def order_after(consumer: int, producer: int | None, device: int) -> None:
    """Make work enqueued from now on ``consumer`` wait for the work already on ``producer``
    (within the current call: ``producer`` is a caller's stream, valid now, not kept).

    Nothing to do (and no CUDA call) when there is no producer stream or it is the same stream.
    """
    if producer is None or same(consumer, producer):
        return
    cuda_runtime.make_stream_wait(consumer, producer, device)
