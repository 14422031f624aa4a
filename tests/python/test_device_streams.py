"""Stream arguments (``streams.as_handle``) and the protocols' stream spellings. The library stream
classes are stand-ins matched by module and class name, as the real ones would be."""

import ctypes

import numpy as np
import pytest

from knetcnn.device import streams

from fake_device_arrays import cai_of
from test_device_views import knet


def _stream_class(module: str, name: str, **attributes):
    return type(name, (), {"__module__": module, **attributes})


CupyStream = _stream_class("cupy.cuda.stream", "Stream", ptr=0x5678)
CupyExternalStream = _stream_class("cupy.cuda.stream", "ExternalStream", ptr=0x5679)
TorchStream = _stream_class("torch.cuda.streams", "Stream", cuda_stream=0x1234)
NumbaStream = _stream_class("numba.cuda.cudadrv.driver", "Stream", handle=ctypes.c_void_p(0x4321))
NumbaDefaultStream = _stream_class("numba.cuda.cudadrv.driver", "Stream", handle=ctypes.c_void_p(None))
CudaPythonStream = _stream_class("cuda.bindings.runtime", "cudaStream_t", __int__=lambda self: 0x9ABC)
CudaDriverStream = _stream_class("cuda.bindings.driver", "CUstream", __int__=lambda self: 0x9ABD)


class ProtocolStream:  # the __cuda_stream__ protocol (cuda.core, newer libraries)
    def __cuda_stream__(self):
        return (0, 0x7777)


class MyCupyStream(CupyStream):  # a user's subclass: recognised through its base class
    pass


@pytest.mark.parametrize("stream, handle", [
    (None, 0), (0, 0), (1, 1), (2, 2), (0xDEAD, 0xDEAD), (2**64 - 1, 2**64 - 1), (np.int64(7), 7), (np.uint64(9), 9),
    (TorchStream(), 0x1234), (CupyStream(), 0x5678), (CupyExternalStream(), 0x5679), (MyCupyStream(), 0x5678),
    (NumbaStream(), 0x4321), (NumbaDefaultStream(), 0), (CudaPythonStream(), 0x9ABC), (CudaDriverStream(), 0x9ABD),
    (ProtocolStream(), 0x7777),
])
def test_stream_arguments(stream, handle):
    assert streams.as_handle(stream, "conv4") == handle


class PtrOnly:  # has .ptr, as a CuPy MemoryPointer or a KnetArray does: not a stream
    ptr = 0x1000


CupyMemoryPointer = _stream_class("cupy.cuda.memory", "MemoryPointer", ptr=0x2000)


class BadProtocol:
    def __cuda_stream__(self):
        return 0x7777


@pytest.mark.parametrize("stream, error, message", [
    (-1, ValueError, ">= 0 and < 2\\*\\*64"), (2**64, ValueError, "< 2\\*\\*64"), (True, TypeError, "not a bool"),
    ("s", TypeError, "not a str"), (1.5, TypeError, "not a float"),
    (PtrOnly(), TypeError, "not a PtrOnly"), (CupyMemoryPointer(), TypeError, "not a MemoryPointer"),
    (object(), TypeError, "not a object"), (BadProtocol(), TypeError, "returned 30583, not a \\(version, handle\\)"),
    (_stream_class("torch.cuda.streams", "Stream", cuda_stream=2**65)(), ValueError, "< 2\\*\\*64"),
])
def test_bad_stream_arguments(stream, error, message):
    with pytest.raises(error, match=rf"conv4: stream=.*{message}"):
        streams.as_handle(stream, "conv4")


def test_a_knetarray_is_not_a_stream():
    with pytest.raises(TypeError, match=r"conv4: stream=KnetArray\(.*not a KnetArray"):
        streams.as_handle(knet(), "conv4")


def test_protocol_spelling_and_identity():
    assert streams.to_protocol(0) == 1 and streams.to_protocol(2) == 2 and streams.to_protocol(99) == 99
    assert streams.same(0, 1) and not streams.same(0, 2) and streams.same(77, 77)


@pytest.mark.parametrize("value", [2**64, 2**80])
def test_cai_stream_entries_must_fit_64_bits(value):
    from knetcnn.device.cai import parse_cai

    with pytest.raises(ValueError, match="a stream handle must be positive and < 2\\*\\*64"):
        parse_cai(cai_of(np.zeros(2, np.float32), stream=value), "conv4", "x")
