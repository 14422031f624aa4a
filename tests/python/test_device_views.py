"""Entry points (is_device_array, as_device_view, mixed-kind detection), stream arguments and
ordering, and results in the caller's library (with fake library modules: nothing computes)."""

import sys
import types

import numpy as np
import pytest

import knetcnn
from knetcnn import KnetArray
from knetcnn._core import core
from knetcnn.device import (allocate_like, array_kind, as_device_view, current_stream, finalize_result,
                            is_device_array, library_of, require_same_kind, streams)

from fake_device_arrays import FakeCAI, FakeCAIWithDevice, FakeDLPack, cai_of

NO_GPU = core.device_unavailable_reason(0)


def knet(shape=(2, 3)):
    host = np.zeros(shape, np.float32)
    return KnetArray._wrap(host.ctypes.data, shape, "float32", owner=host)


# --- detection -----------------------------------------------------------------------------------

def test_is_device_array():
    assert is_device_array(knet())
    assert is_device_array(FakeCAI(cai_of(np.zeros(2, np.float32))))
    assert is_device_array(FakeDLPack(np.zeros(2, np.float32), device=(2, 0)))
    assert is_device_array(FakeDLPack(np.zeros(2, np.float32), device=(13, 0)))  # CUDA managed
    assert not is_device_array(FakeDLPack(np.zeros(2, np.float32), device=(1, 0)))  # host DLPack
    assert not is_device_array(FakeDLPack(np.zeros(2, np.float32), device=(3, 0)))  # pinned host
    assert not is_device_array(np.zeros(3))
    assert not is_device_array([1.0, 2.0]) and not is_device_array(3.0) and not is_device_array(None)


def test_dlpack_device_decides_over_a_cai_attribute():
    # A host DLPack array that also has a CAI attribute (e.g. managed memory seen from the host).
    class HostWithCAI(FakeDLPack):
        __cuda_array_interface__ = {}

    assert not is_device_array(HostWithCAI(np.zeros(2, np.float32), device=(1, 0)))


def test_a_refusing_cai_property_still_marks_a_device_array():
    class RequiresGrad:
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("requires grad")

    assert is_device_array(RequiresGrad())


def test_array_kind_and_mixing():
    k, h = knet(), np.zeros(3, np.float32)
    assert (array_kind(k), array_kind(h), array_kind(FakeDLPack(h, device=(1, 0))), array_kind(1.5)) == \
        ("device", "host", "host", "other")
    assert require_same_kind("conv4", {"w": k, "x": knet()}) == "device"
    assert require_same_kind("conv4", {"w": h, "x": h}) == "host"
    with pytest.raises(TypeError, match=r"conv4: w is a device array \(KnetArray\), x is a host array \(ndarray\): "
                                        r"pass all host \(NumPy\) arrays .* or all device arrays"):
        require_same_kind("conv4", {"w": k, "x": h})
    with pytest.raises(TypeError, match=r"pool: x is a str, not an array"):
        require_same_kind("pool", {"x": "abc"})


def test_non_arrays_are_refused_by_as_device_view():
    with pytest.raises(TypeError, match=r"conv4: x is a list, not a device array"):
        as_device_view([1.0], "conv4", "x")


# --- stream ordering (stream arguments: test_device_streams.py) ------------------------------------

def test_ordering_is_skipped_without_a_producer_stream_or_on_the_same_stream():
    streams.order_after(5, None, 0)  # no CUDA call: would raise here
    streams.order_after(5, 5, 0)
    streams.order_after(0, 1, 0)  # 0 and 1 are both the legacy default stream


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_ordering_two_streams_needs_cuda_and_says_why_without_it():
    with pytest.raises(knetcnn.DeviceUnavailableError, match="no GPU is usable"):
        streams.order_after(5, 6, 0)


# --- CAI stream semantics through as_device_view ---------------------------------------------------

def test_cai_on_the_consumer_stream_needs_no_ordering_and_release_needs_none():
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=0x700))
    v = as_device_view(x, "conv4", "x", stream=0x700)
    assert v.producer_stream == 0x700 and v.consumer_stream == 0x700
    v.release()
    assert v.released


def test_cai_legacy_stream_matches_our_legacy_default():
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=1))
    v = as_device_view(x, "conv4", "x", stream=None)
    assert v.producer_stream == 1
    v.release()


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_cai_on_another_stream_is_ordered_with_cuda_events():
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32), stream=0x700))
    with pytest.raises(knetcnn.DeviceUnavailableError, match="no GPU is usable"):
        as_device_view(x, "conv4", "x", stream=0x800)


# --- results -------------------------------------------------------------------------------------------

def _fake_type(module: str, name: str = "ndarray"):
    return type(name, (), {"__module__": module})


@pytest.mark.parametrize("module, library", [("cupy._core.core", "cupy"), ("torch", "torch"),
                                             ("jaxlib.xla_extension", "jax"), ("jax._src.array", "jax"),
                                             ("numba.cuda.cudadrv.devicearray", "numba"),
                                             ("numpy", "other"), ("mylib.arrays", "other")])
def test_library_of(module, library):
    assert library_of(_fake_type(module)()) == library
    assert library_of(knet()) == "knetcnn"


def test_current_stream_defaults_to_legacy():
    assert current_stream(knet(), 0) == 0 and current_stream(object(), 0) == 0


class _Context:
    def __init__(self, log, device):
        self.log, self.device = log, device

    def __enter__(self):
        self.log.append(("enter", self.device))

    def __exit__(self, *exc):
        self.log.append(("exit", self.device))


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in `cupy` module whose arrays are FakeDLPack producers over host memory."""
    log = []
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        Device=lambda device: _Context(log, device),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0x4242),
    )

    def empty(shape, dtype):
        log.append(("empty", shape, dtype))
        return FakeDLPack(np.zeros(shape, dtype), device=(2, 1))

    cupy.empty = empty
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    template = _fake_type("cupy._core.core")()
    return cupy, log, template


def test_current_stream_of_cupy_callers(fake_cupy):
    _, log, template = fake_cupy
    assert current_stream(template, 1) == 0x4242 and log == [("enter", 1), ("exit", 1)]


def test_allocate_like_cupy(fake_cupy):
    _, log, template = fake_cupy
    out, view = allocate_like(template, (2, 3), "float32", 1, stream=0x4242, function="conv4")
    assert isinstance(out, FakeDLPack) and log == [("enter", 1), ("empty", (2, 3), "float32"), ("exit", 1)]
    assert (view.shape, view.dtype, view.device, view.source) == ((2, 3), "float32", 1, "dlpack")
    assert out.calls[0]["stream"] == 0x4242  # handed our stream, as a DLPack consumer must
    assert finalize_result(out, view, 0x4242) is out and out.deleted == 1


def test_allocate_like_refuses_bfloat16_for_cupy(fake_cupy):
    _, _, template = fake_cupy
    with pytest.raises(TypeError, match="conv4: CuPy has no bfloat16 arrays"):
        allocate_like(template, (2,), "bfloat16", 0, function="conv4")


def test_allocate_like_torch(monkeypatch):
    made = []
    torch = types.ModuleType("torch")
    torch.float16, torch.bfloat16 = "torch.float16", "torch.bfloat16"
    torch.cuda = types.SimpleNamespace(current_stream=lambda device: types.SimpleNamespace(cuda_stream=0x77))

    def empty(shape, dtype, device):
        made.append((shape, dtype, device))
        return FakeDLPack(np.zeros(shape, np.uint16), device=(2, 0), code=4 if dtype == "torch.bfloat16" else 2)

    torch.empty = empty
    monkeypatch.setitem(sys.modules, "torch", torch)
    template = _fake_type("torch", "Tensor")()
    assert current_stream(template, 0) == 0x77
    out, view = allocate_like(template, (4,), "bfloat16", 0, stream=0x77)
    assert made == [((4,), "torch.bfloat16", "cuda:0")] and view.dtype == "bfloat16"
    assert finalize_result(out, view) is out


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_allocate_like_knetarray_needs_a_gpu():
    with pytest.raises(knetcnn.DeviceUnavailableError, match="KnetArray.empty: no GPU is usable"):
        allocate_like(knet(), (2, 2), "float32", 0)


def test_finalize_result_hands_jax_callers_a_jax_array(monkeypatch):
    converted = []
    jax = types.ModuleType("jax")
    jax.dlpack = types.SimpleNamespace(from_dlpack=lambda obj: converted.append(obj) or "jax array")
    monkeypatch.setitem(sys.modules, "jax", jax)
    k = knet()
    view = as_device_view(k, "conv4", "y", stream=0x31)
    view.deliver_as = "jax"
    assert finalize_result(k, view, 0x31) == "jax array" and converted == [k]
    assert k._alloc.pending_stream == 0x31  # JAX's import will be ordered after our work


def test_release_runs_every_hook_even_when_one_fails():
    from knetcnn.device import ArrayView

    ran = []
    v = ArrayView(ptr=0, shape=(0,), strides=(1,), dtype="float32", device=0, owner=object())

    def failing(stream):
        ran.append(("failing", stream))
        raise RuntimeError("ordering failed")

    v._on_release.extend([failing, lambda stream: ran.append(("deleter", stream))])
    with pytest.raises(RuntimeError, match="ordering failed"):
        v.release(9)
    assert ran == [("failing", 9), ("deleter", 9)] and v.owner is None and v.released
    v.release(9)  # idempotent: nothing runs twice
    assert len(ran) == 2
