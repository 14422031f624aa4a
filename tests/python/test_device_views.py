"""Entry points (is_device_array, as_device_view, mixed-kind detection) and results in the
caller's library (with fake library modules and the simulated CUDA runtime: nothing computes).
Stream arguments are in test_device_streams.py, ordering and lifetimes in test_device_ordering.py."""

import sys
import types

import numpy as np
import pytest

import knetcnn
from knetcnn import KnetArray
from knetcnn._core import core
from knetcnn.device import (allocate_like, array_kind, as_device_view, current_stream, finalize_result,
                            is_device_array, library_of, require_same_kind, safepoints)

from fake_device_arrays import FakeCAI, FakeDLPack, cai_of

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


def test_library_of_subclasses():
    # A user's subclass of torch.Tensor lives in the user's module: its bases say which library it is.
    class MyTensor(_fake_type("torch._tensor", "Tensor")):
        pass

    class Deeper(MyTensor):
        pass

    assert MyTensor.__module__ == __name__ and library_of(Deeper()) == "torch"
    assert library_of(type("Sub", (_fake_type("cupy._core.core"),), {})()) == "cupy"


def test_current_stream_defaults_to_legacy():
    assert current_stream(knet(), 0) == 0 and current_stream(object(), 0) == 0


class _Context:
    def __init__(self, log, device):
        self.log, self.device = log, device

    def __enter__(self):
        self.log.append(("enter", self.device))

    def __exit__(self, *exc):
        self.log.append(("exit", self.device))


class CupyArray(FakeDLPack):
    """A FakeDLPack that passes for a cupy.ndarray (by its module), logging its __dlpack__ calls."""

    __module__ = "cupy._core.core"
    log: list = []

    def __dlpack__(self, **keywords):
        self.log.append(("__dlpack__", keywords["stream"]))
        return super().__dlpack__(**keywords)


@pytest.fixture
def fake_cupy(monkeypatch, cuda):
    """A stand-in `cupy` module whose arrays are FakeDLPack producers over host memory."""
    log = []
    state = {"stream": 0x4242}
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        Device=lambda device: _Context(log, device),
        get_current_stream=lambda: types.SimpleNamespace(ptr=state["stream"]),
    )

    def empty(shape, dtype):
        log.append(("empty", shape, dtype))
        return CupyArray(np.zeros(shape, dtype), device=(2, 1))

    cupy.empty = empty
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(CupyArray, "log", log)
    template = _fake_type("cupy._core.core")()
    return cupy, log, template, state


def test_current_stream_of_cupy_callers(fake_cupy):
    _, log, template, _ = fake_cupy
    assert current_stream(template, 1) == 0x4242 and log == [("enter", 1), ("exit", 1)]


def test_allocate_like_cupy(fake_cupy, cuda):
    _, log, template, _ = fake_cupy
    out, view = allocate_like(template, (2, 3), "float32", 1, stream=0x4242, function="conv4")
    # The view is taken inside CuPy's Device context: its __dlpack__ records events on device 1.
    assert isinstance(out, CupyArray) and log == [("enter", 1), ("empty", (2, 3), "float32"),
                                                  ("__dlpack__", 0x4242), ("exit", 1)]
    assert (view.shape, view.dtype, view.device, view.source, view.where) == ((2, 3), "float32", 1, "dlpack",
                                                                             "conv4: out")
    assert finalize_result(out, view, 0x4242) is out
    (record,) = cuda.calls("record")
    assert record[2:] == (0x4242, 1) and cuda.calls("wait") == []  # CuPy already works on our stream
    assert out.deleted == 0  # the tensor is kept until our work on it has completed
    cuda.complete()
    safepoints.drain()
    assert out.deleted == 1


def test_cupy_results_order_cupys_current_stream_after_our_work(fake_cupy, cuda):
    _, log, template, state = fake_cupy
    out, view = allocate_like(template, (2,), "float32", 1, stream=0x5000, function="conv4")
    state["stream"] = 0x4343  # CuPy's current stream is not the one we ran on
    finalize_result(out, view, 0x5000)
    (record,) = cuda.calls("record")
    assert cuda.calls("wait") == [("wait", 0x4343, record[1], 1)]


def test_allocate_like_refuses_bfloat16_for_cupy(fake_cupy):
    _, _, template, _ = fake_cupy
    with pytest.raises(TypeError, match="conv4: CuPy has no bfloat16 arrays"):
        allocate_like(template, (2,), "bfloat16", 0, function="conv4")


def test_allocate_like_torch(monkeypatch, cuda):
    made = []
    torch = types.ModuleType("torch")
    torch.float16, torch.bfloat16 = "torch.float16", "torch.bfloat16"
    torch.cuda = types.SimpleNamespace(current_stream=lambda device: types.SimpleNamespace(cuda_stream=0x77))
    Tensor = type("Tensor", (FakeDLPack,), {"__module__": "torch"})

    def empty(shape, dtype, device):
        made.append((shape, dtype, device))
        return Tensor(np.zeros(shape, np.uint16), device=(2, 0), code=4 if dtype == "torch.bfloat16" else 2)

    torch.empty = empty
    monkeypatch.setitem(sys.modules, "torch", torch)
    template = _fake_type("torch", "Tensor")()
    assert current_stream(template, 0) == 0x77
    out, view = allocate_like(template, (4,), "bfloat16", 0, stream=0x99)
    assert made == [((4,), "torch.bfloat16", "cuda:0")] and view.dtype == "bfloat16"
    assert finalize_result(out, view) is out
    (record,) = cuda.calls("record")
    # We ran on 0x99; PyTorch's current stream 0x77 must not touch the result before our work is done.
    assert record[2:] == (0x99, 0) and cuda.calls("wait") == [("wait", 0x77, record[1], 0)]


@pytest.mark.skipif(not NO_GPU, reason="checks the error where no GPU is usable")
def test_allocate_like_knetarray_needs_a_gpu():
    with pytest.raises(knetcnn.DeviceUnavailableError, match="KnetArray.empty: no GPU is usable"):
        allocate_like(knet(), (2, 2), "float32", 0)


def test_finalize_result_hands_jax_callers_a_jax_array(monkeypatch, cuda):
    converted = []
    jax = types.ModuleType("jax")
    jax.dlpack = types.SimpleNamespace(from_dlpack=lambda obj: converted.append(obj) or "jax array")
    monkeypatch.setitem(sys.modules, "jax", jax)
    k = knet()
    view = as_device_view(k, "conv4", "y", stream=0x31)
    view.deliver_as = "jax"
    assert finalize_result(k, view, 0x31) == "jax array" and converted == [k]
    # JAX's import (k.__dlpack__(stream=JAX's stream)) will be ordered after this event.
    (event,) = k._alloc.pending
    assert cuda.events[event.handle]["stream"] == 0x31


def test_release_runs_every_hook_even_when_one_fails(cuda):
    from knetcnn.device import ArrayView

    ran = []
    v = ArrayView(ptr=64, shape=(1,), strides=(1,), dtype="float32", device=0, owner=object(), where="conv4: x")

    def failing(stream, event):
        ran.append(("failing", stream))
        raise RuntimeError("ordering failed")

    v._on_release.extend([failing, lambda stream, event: ran.append(("second", stream))])
    v._closers.append(lambda: ran.append("deleter"))
    with pytest.raises(RuntimeError, match="ordering failed"):
        v.release(9)
    assert ran == [("failing", 9), ("second", 9)] and v.owner is None and v.released
    assert safepoints.pending() == 1  # the deleter still waits for the work to complete
    v.release(9)  # idempotent: nothing runs twice
    cuda.complete()
    safepoints.drain()
    assert ran == [("failing", 9), ("second", 9), "deleter"]
