"""The device backend's marshalling, end to end, without a GPU.

The simulated CUDA runtime (fake_cuda) keeps "device memory" in host memory, and the core's
exec_* entry points are replaced by stand-ins that follow their documented contract (which
pointer holds which array, with which geometry shape) and compute with the CPU backend. So a
call on KnetArrays runs the real dispatcher, views, allocation and release code, and its result
equals the CPU result only if every pointer, shape, stride and scalar reached the right place.
Nothing here says how cuDNN behaves on a GPU: that is the gpu tier's job.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import knetcnn
from knetcnn import cpu
from knetcnn._core import core

from fake_cuda import cuda  # noqa: F401 - fixture

# The binding's documented pointer order (bind_exec.cpp docstrings), as (argument, geometry field)
# for the inputs, then the result's geometry field. Written out independently of knetcnn._device.
CONTRACT = {
    "conv4": ([("w", "filter_shape"), ("x", "input_shape")], "output_shape"),
    "conv4x": ([("w", "filter_shape"), ("dy", "output_shape")], "input_shape"),
    "conv4w": ([("x", "input_shape"), ("dy", "output_shape")], "filter_shape"),
    "deconv4": ([("w", "filter_shape"), ("x", "output_shape")], "input_shape"),
    "deconv4w": ([("x", "output_shape"), ("dy", "input_shape")], "filter_shape"),
    "deconv4x": ([("w", "filter_shape"), ("dy", "input_shape")], "output_shape"),
    "pool": ([("x", "input_shape")], "output_shape"),
    "poolx": ([("x", "input_shape"), ("y", "output_shape"), ("dy", "output_shape")], "input_shape"),
    "unpool": ([("x", "output_shape")], "input_shape"),
    "unpoolx": ([("dy", "input_shape")], "output_shape"),
}
# The CPU backend's argument order for each op (the public API's order).
CPU_ARGS = {"conv4": ("w", "x"), "conv4x": ("w", "x", "dy"), "conv4w": ("w", "x", "dy"), "deconv4": ("w", "x"),
            "deconv4w": ("w", "x", "dy"), "deconv4x": ("w", "x", "dy"), "pool": ("x",),
            "poolx": ("x", "y", "dy"), "unpool": ("x",), "unpoolx": ("x", "y", "dy")}
# Which geometry field gives the shape of an argument the core does not read (x of conv4x, ...).
SHAPE_ONLY = {"conv4x": {"x": "input_shape"}, "conv4w": {"w": "filter_shape"}, "deconv4w": {"w": "filter_shape"},
              "deconv4x": {"x": "output_shape"}, "unpoolx": {"x": "output_shape", "y": "input_shape"}}


def host_array(cuda, ptr, shape, strides, dtype):
    """The simulated device memory at `ptr` as a NumPy view (strides in elements); refuses to read
    past the simulated allocation (a wrong shape would otherwise read stray host memory)."""
    itemsize = np.dtype(dtype).itemsize
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides)) if all(shape) else 0
    assert ptr in cuda.buffers, f"pointer {ptr:#x} is not the start of a simulated allocation"
    assert span * itemsize <= len(cuda.buffers[ptr]), f"shape {shape} runs past the allocation"
    buf = (ctypes.c_char * (span * itemsize)).from_address(ptr)
    flat = np.frombuffer(buf, dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape, tuple(s * itemsize for s in strides))


def fake_exec(cuda, op, calls):
    inputs, result_field = CONTRACT[op]

    def run(geometry, dtype, *ptrs, alpha=1.0, beta=0.0, device=0, stream=0, **strides):
        assert len(ptrs) == len(inputs) + 1, f"{op}: {len(ptrs)} pointers"
        assert beta == 0.0
        arrays = {}
        for (name, field), ptr in zip(inputs, ptrs):
            shape = getattr(geometry, field)
            arrays[name] = host_array(cuda, ptr, shape, strides[f"{name}_strides"], dtype)
        for name, field in SHAPE_ONLY.get(op, {}).items():
            arrays[name] = np.zeros(getattr(geometry, field), dtype)
        result = cpu.run(op, tuple(arrays[n] for n in CPU_ARGS[op]), geometry, alpha)
        out_name = [k for k in strides if k.split("_")[0] not in arrays][0]
        out = host_array(cuda, ptrs[-1], getattr(geometry, result_field), strides[out_name], dtype)
        out[...] = result
        calls.append(dict(op=op, device=device, stream=stream, alpha=alpha))

    return run


@pytest.fixture
def exec_calls(cuda, monkeypatch):  # noqa: F811 - the fixture above
    calls = []
    for op in CONTRACT:
        monkeypatch.setattr(core, f"exec_{op}", fake_exec(cuda, op, calls))
    return calls


def k(a):
    return knetcnn.KnetArray(a)


def rng_arrays(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


CONV_CASES = [
    ((4, 3, 3, 3), (2, 3, 9, 8), dict(padding=(1, 0), stride=(2, 1), mode=1, alpha=0.5)),
    ((6, 1, 2, 2, 2), (1, 3, 5, 5, 4), dict(group=3, dilation=2)),
    ((2, 2, 3), (3, 2, 7), dict(padding=2)),
]


@pytest.mark.parametrize("w_shape, x_shape, kw", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_family_through_the_device_backend(exec_calls, w_shape, x_shape, kw, dtype):
    w, x = rng_arrays(1, w_shape, x_shape, dtype=dtype)
    y = knetcnn.conv4(w, x, **kw)
    (dy,) = rng_arrays(2, y.shape, dtype=dtype)
    for op, args in (("conv4", (w, x)), ("conv4x", (w, x, dy)), ("conv4w", (w, x, dy))):
        out = getattr(knetcnn, op)(*map(k, args), **kw)
        assert isinstance(out, knetcnn.KnetArray) and out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out.get(), getattr(knetcnn, op)(*args, **kw), err_msg=op)
    assert [c["op"] for c in exec_calls] == ["conv4", "conv4x", "conv4w"]
    assert all(c["alpha"] == kw.get("alpha", 1) for c in exec_calls)


def test_deconv_family_through_the_device_backend(exec_calls):
    w, x = rng_arrays(3, (3, 2, 3, 3), (2, 3, 4, 5))
    kw = dict(stride=2, padding=1, output_padding=(1, 0), alpha=2.0)
    y = knetcnn.deconv4(w, x, **kw)
    (dy,) = rng_arrays(4, y.shape)
    for op, args in (("deconv4", (w, x)), ("deconv4x", (w, x, dy)), ("deconv4w", (w, x, dy))):
        out = getattr(knetcnn, op)(*map(k, args), **kw)
        np.testing.assert_array_equal(out.get(), getattr(knetcnn, op)(*args, **kw), err_msg=op)


@pytest.mark.parametrize("kw", [dict(), dict(window=3, stride=2, padding=1, mode=2), dict(window=(2, 3), mode=1, alpha=-1.5)])
def test_pool_family_through_the_device_backend(exec_calls, kw):
    rng = np.random.default_rng(5)
    x = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8).astype(np.float32)
    y = knetcnn.pool(x, **kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(knetcnn.pool(k(x), **kw).get(), y)
    np.testing.assert_array_equal(knetcnn.poolx(k(x), k(y), k(dy), **kw).get(), knetcnn.poolx(x, y, dy, **kw))
    u = knetcnn.unpool(x, **kw)
    np.testing.assert_array_equal(knetcnn.unpool(k(x), **kw).get(), u)
    du = rng.standard_normal(u.shape).astype(np.float32)
    np.testing.assert_array_equal(knetcnn.unpoolx(k(x), k(u), k(du), **kw).get(), knetcnn.unpoolx(x, u, du, **kw))


def test_inputs_released_after_the_work_on_the_same_stream(cuda, exec_calls):  # noqa: F811
    w, x = rng_arrays(6, (2, 1, 3), (1, 1, 6))
    knetcnn.conv4(k(w), k(x))
    (call,) = exec_calls
    recorded_streams = {entry[2] for entry in cuda.calls("record")}
    assert call["stream"] in recorded_streams  # release events were recorded on the work stream


def test_a_failing_exec_releases_and_reports_the_real_error(cuda, monkeypatch):  # noqa: F811
    def broken(*args, **kwargs):
        raise knetcnn.CudnnNotSupportedError("cudnnConvolutionForward failed", 3000, "CUDNN_STATUS_NOT_SUPPORTED", "f")

    monkeypatch.setattr(core, "exec_conv4", broken)
    w, x = rng_arrays(7, (2, 1, 3), (1, 1, 6))
    kw_, kx = k(w), k(x)
    with pytest.raises(knetcnn.CudnnNotSupportedError, match="cudnnConvolutionForward"):
        knetcnn.conv4(kw_, kx)
    np.testing.assert_array_equal(kx.get(), x)  # inputs intact and usable after the failure


def test_an_explicit_stream_is_the_one_the_work_runs_on(exec_calls):
    w, x = rng_arrays(8, (2, 1, 3), (1, 1, 6))
    knetcnn.conv4(k(w), k(x), stream=77)
    knetcnn.pool(k(x), stream=78)
    assert [c["stream"] for c in exec_calls] == [77, 78]
    np.testing.assert_array_equal(knetcnn.conv4(w, x, stream=77), knetcnn.conv4(w, x))  # host: ignored


def test_a_bad_stream_is_a_type_error_naming_the_function(exec_calls):
    w, x = rng_arrays(9, (2, 1, 3), (1, 1, 6))
    with pytest.raises(TypeError, match="conv4"):
        knetcnn.conv4(k(w), k(x), stream="fast")
