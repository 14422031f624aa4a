"""DLPack consumption (and the ABI layout), with fake producers that build real capsules over host
memory but report a CUDA device, and a simulated CUDA runtime (the `cuda` fixture). The capsules
are only parsed, never computed on."""

import contextlib
import ctypes

import numpy as np
import pytest

from knetcnn.device import as_device_view, dlpack_abi as abi, safepoints
from knetcnn.device import cuda_runtime as rt
from knetcnn.device.dlpack_import import DLPackImport, import_dlpack

from fake_device_arrays import FakeDLPack, dlpack_bfloat16

pytestmark = pytest.mark.usefixtures("cuda")  # importing runs __dlpack__ with the array's device current


def test_struct_layouts_match_dlpack_h():
    # 64-bit layouts of dlpack.h v1.x; a mismatch would make every field read garbage.
    assert ctypes.sizeof(abi.DLDevice) == 8 and ctypes.sizeof(abi.DLDataType) == 4
    assert (abi.DLDataType.bits.offset, abi.DLDataType.lanes.offset, abi.DLDevice.device_id.offset) == (1, 2, 4)
    t = abi.DLTensor
    assert (t.data.offset, t.device.offset, t.ndim.offset, t.dtype.offset, t.shape.offset, t.strides.offset,
            t.byte_offset.offset, ctypes.sizeof(t)) == (0, 8, 16, 20, 24, 32, 40, 48)
    m = abi.DLManagedTensor
    assert (m.dl_tensor.offset, m.manager_ctx.offset, m.deleter.offset, ctypes.sizeof(m)) == (0, 48, 56, 64)
    v = abi.DLManagedTensorVersioned
    assert (v.version.offset, v.manager_ctx.offset, v.deleter.offset, v.flags.offset, v.dl_tensor.offset,
            ctypes.sizeof(v)) == (0, 8, 16, 24, 32, 80)
    assert abi.VERSIONED_DELETER_OFFSET == 16 and ctypes.sizeof(abi.DLPackVersion) == 8


@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_parse_contiguous(versioned, dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    p = FakeDLPack(a, versioned=versioned)
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert (v.ptr, v.shape, v.strides, v.dtype, v.device) == (a.ctypes.data, (3, 4), (4, 1), np.dtype(dtype).name, 0)
    assert v.source == "dlpack" and not v.readonly and not v.managed
    assert p.deleted == 0  # the view owns the tensor until released
    v.release(enqueued=False)  # nothing was enqueued: the deleter runs at once
    assert p.deleted == 1
    v.release()
    assert p.deleted == 1  # exactly once


def test_capsule_is_renamed_when_consumed():
    p = FakeDLPack(np.zeros(4, np.float32))
    capsule = p.__dlpack__(stream=1, max_version=(1, 1))
    imported = DLPackImport(capsule, "conv4", "x")
    assert abi.capsule_name(capsule) == b"used_dltensor_versioned"
    imported.close()
    assert p.deleted == 1
    legacy = FakeDLPack(np.zeros(4, np.float32), versioned=False)
    capsule = legacy.__dlpack__(stream=1)
    DLPackImport(capsule, "conv4", "x").close()
    assert abi.capsule_name(capsule) == b"used_dltensor" and legacy.deleted == 1


def test_a_used_capsule_cannot_be_consumed_again():
    p = FakeDLPack(np.zeros(4, np.float32))
    capsule = p.__dlpack__(stream=1, max_version=(1, 1))
    DLPackImport(capsule, "conv4", "x").close()
    with pytest.raises(ValueError, match=r"named b'used_dltensor_versioned'.*consumed only once"):
        DLPackImport(capsule, "conv4", "x")
    assert p.deleted == 1


def test_deleter_runs_when_the_import_is_dropped_without_release():
    p = FakeDLPack(np.zeros(4, np.float32))
    v = import_dlpack(p, "conv4", "x", stream=0)
    del v
    import gc
    gc.collect()
    assert p.deleted == 1


def test_byte_offset_is_added():
    base = np.arange(10, dtype=np.float32)
    p = FakeDLPack(base[2:], byte_offset=8)
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert v.ptr == base.ctypes.data + 8 == base[2:].ctypes.data
    v.release()


def test_null_strides_mean_c_contiguous():
    p = FakeDLPack(np.zeros((2, 3, 4), np.float32), strides=None)
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert v.strides == (12, 4, 1) and v.is_c_contiguous
    v.release()


def test_element_strides_are_taken_as_they_are():
    a = np.zeros((4, 6), np.float64)[:, ::2]
    v = import_dlpack(FakeDLPack(a), "conv4", "x", stream=0)
    assert v.strides == (6, 2) and not v.is_c_contiguous
    v.release()


def test_negative_strides_are_refused_and_the_deleter_still_runs():
    p = FakeDLPack(np.zeros((3, 2), np.float32), strides=(-2, 1))
    with pytest.raises(ValueError, match=r"conv4: x: .*negative strides .*make a contiguous copy"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


def test_bfloat16_comes_through_dlpack():
    p = dlpack_bfloat16((2, 3))
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert v.dtype == "bfloat16" and v.itemsize == 2 and v.strides == (3, 1)
    v.release()


@pytest.mark.parametrize("code, bits, lanes, described", [(0, 32, 1, "int32"), (2, 8, 1, "float8"),
                                                          (5, 64, 1, "complex64"), (2, 32, 4, "float32x4"),
                                                          (4, 32, 1, "bfloat32"), (9, 8, 1, "type code 9")])
def test_unsupported_dtypes_are_type_errors(code, bits, lanes, described):
    p = FakeDLPack(np.zeros(4, np.float32), code=code, bits=bits, lanes=lanes)
    with pytest.raises(TypeError, match=rf"pool: y has element type {described}"):
        import_dlpack(p, "pool", "y", stream=0)
    assert p.deleted == 1


def test_readonly_flag_of_versioned_tensors():
    p = FakeDLPack(np.zeros(4, np.float32), flags=abi.FLAG_READ_ONLY)
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert v.readonly
    v.release()


def test_other_major_version_is_refused_after_calling_the_deleter():
    p = FakeDLPack(np.zeros(4, np.float32), major=2)
    with pytest.raises(ValueError, match=r"exported DLPack 2\.0; knetcnn reads DLPack 1\.x"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


@pytest.mark.parametrize("consumer, expected", [(0, 1), (1, 1), (2, 2), (0xABC0, 0xABC0)])
def test_stream_handed_to_the_producer(consumer, expected):
    # 0 (our legacy default) must be spelled 1: the protocol disallows 0.
    p = FakeDLPack(np.zeros(2, np.float32))
    import_dlpack(p, "conv4", "x", stream=consumer).release()
    assert p.calls == [{"stream": expected, "max_version": (1, 1)}]


def test_legacy_producer_without_max_version():
    p = FakeDLPack(np.zeros(2, np.float32), legacy_only=True)
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert p.calls == [{"stream": 1}] and v.shape == (2,)
    v.release(enqueued=False)
    assert p.deleted == 1


def test_host_dlpack_is_not_a_device_array():
    p = FakeDLPack(np.zeros(2, np.float32), device=(1, 0))
    with pytest.raises(TypeError, match=r"conv4: x \(FakeDLPack\) is not on a CUDA device \(DLPack device type 1\)"):
        as_device_view(p, "conv4", "x")
    assert p.calls == []


def test_numpy_itself_is_refused_as_a_device_array():
    with pytest.raises(TypeError, match="not on a CUDA device"):
        as_device_view(np.zeros(3, np.float32), "conv4", "x")


def test_cuda_managed_memory():
    p = FakeDLPack(np.zeros(2, np.float32), device=(13, 0))
    v = import_dlpack(p, "conv4", "x", stream=0)
    assert v.managed and v.device == 0
    v.release()


def test_device_id_is_taken_from_the_tensor_and_checked_against_dlpack_device():
    v = import_dlpack(FakeDLPack(np.zeros(2, np.float32), device=(2, 1)), "conv4", "x", stream=0)
    assert v.device == 1
    v.release()
    p = FakeDLPack(np.zeros(2, np.float32), device=(2, 0), tensor_device=(2, 1))
    with pytest.raises(ValueError, match=r"__dlpack_device__\(\) said \(2, 0\) but the tensor says \(2, 1\)"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


def test_tensor_on_another_device_type_is_refused():
    p = FakeDLPack(np.zeros(2, np.float32), device=(2, 0), tensor_device=(10, 0))
    with pytest.raises(ValueError, match="lives on kDLROCM, not a CUDA device"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


def test_null_data_only_for_zero_size():
    v = import_dlpack(FakeDLPack(np.zeros((0, 3), np.float32)), "conv4", "x", stream=0)
    assert v.ptr == 0 and v.size == 0
    v.release()
    p = FakeDLPack(np.zeros((0, 3), np.float32), shape=(2, 3))
    with pytest.raises(ValueError, match="null data pointer for shape"):
        import_dlpack(p, "conv4", "x", stream=0)


def test_absurd_ndim_is_refused_before_reading_shape():
    p = FakeDLPack(np.zeros(2, np.float32), shape=tuple([1] * 65))
    with pytest.raises(ValueError, match="ndim=65"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


def test_bare_capsules_are_refused():
    capsule = FakeDLPack(np.zeros(2, np.float32)).__dlpack__(stream=1)
    with pytest.raises(TypeError, match="bare DLPack capsule; pass the array itself"):
        as_device_view(capsule, "conv4", "x")


class _Refuses:
    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **keywords):
        raise BufferError("Can't export tensors that require gradient, use tensor.detach()")


def test_producer_refusal_names_the_argument():
    # BufferError/TypeError from the producer: the array cannot be exported, a TypeError for the caller.
    with pytest.raises(TypeError, match=r"deconv4: w \(_Refuses\): its __dlpack__\(\) refused: BufferError: "
                                        r"Can't export tensors that require gradient") as error:
        as_device_view(_Refuses(), "deconv4", "w")
    assert isinstance(error.value.__cause__, BufferError)


@pytest.mark.parametrize("raised, expected", [(TypeError("unsupported dtype"), TypeError),
                                              (RuntimeError("CUDA error: out of memory"), ValueError)])
def test_other_producer_failures_keep_their_cause(raised, expected):
    class Fails(_Refuses):
        def __dlpack__(self, **keywords):
            raise raised

    with pytest.raises(expected, match=rf"conv4: x \(Fails\): its __dlpack__\(\) refused: {type(raised).__name__}: ") \
            as error:
        as_device_view(Fails(), "conv4", "x")
    assert error.value.__cause__ is raised


@pytest.mark.parametrize("device", [(2,), "cuda", (2.0, 0), (True, 0)])
def test_malformed_dlpack_device(device):
    class Odd:
        def __dlpack_device__(self):
            return device

        def __dlpack__(self, **keywords):
            raise AssertionError("must not be called")

    with pytest.raises(TypeError, match=r"returned .* not a \(device type, device id\) pair of ints"):
        import_dlpack(Odd(), "conv4", "x", stream=0)


def test_not_a_capsule_is_refused():
    class Wrong:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, **keywords):
            return "capsule"

    with pytest.raises(TypeError, match=r"__dlpack__\(\) returned a str, not a PyCapsule"):
        as_device_view(Wrong(), "conv4", "x")


def test_as_device_view_prefers_dlpack_over_cai():
    a = np.zeros((2, 2), np.float32)

    class Both(FakeDLPack):
        @property
        def __cuda_array_interface__(self):
            raise AssertionError("DLPack should have been used")

    p = Both(a)
    v = as_device_view(p, "conv4", "x", stream=5)
    assert v.source == "dlpack" and v.consumer_stream == 5 and p.calls[0]["stream"] == 5
    v.release(enqueued=False)
    assert p.deleted == 1


@pytest.mark.parametrize("dtype, byte_offset", [(np.float32, 2), (np.float64, 4), (np.float16, 1)])
def test_misaligned_data_is_refused_and_the_deleter_still_runs(dtype, byte_offset):
    buffer = np.zeros(64, np.uint8)
    a = np.frombuffer(buffer, dtype, count=4, offset=byte_offset)  # starts mid-element
    p = FakeDLPack(a, byte_offset=byte_offset)  # data aligned, data + byte_offset not
    with pytest.raises(ValueError, match=r"conv4: x: the DLPack tensor has data pointer 0x[0-9a-f]+, which is not "
                                         r"a multiple of the \d-byte float\d+ element \(misaligned\)"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


def test_a_pointer_past_64_bits_is_refused():
    p = FakeDLPack(np.zeros(4, np.float32), byte_offset=2**63 + 2**62)
    with pytest.raises(ValueError, match=r"data pointer \d+: a pointer must be >= 0 and < 2\*\*64"):
        import_dlpack(p, "conv4", "x", stream=0)
    assert p.deleted == 1


@pytest.mark.parametrize("device, message", [((2, -1), "reports CUDA device -1: a device ordinal must be >= 0"),
                                             ((13, -2), "reports CUDA device -2"),
                                             ((2, 2), "reports CUDA device 2, but 2 GPUs are visible")])
def test_device_ordinals_are_checked_before_calling_the_producer(cuda, device, message):
    p = FakeDLPack(np.zeros(2, np.float32), device=device)
    with pytest.raises(ValueError, match=rf"conv4: x {message}"):
        as_device_view(p, "conv4", "x")
    assert p.calls == []


def test_negative_ordinals_are_refused_even_where_gpus_cannot_be_counted(monkeypatch):
    monkeypatch.setattr(rt, "known_device_count", lambda: None)
    with pytest.raises(ValueError, match="reports CUDA device -1: a device ordinal must be >= 0"):
        as_device_view(FakeDLPack(np.zeros(2, np.float32), device=(2, -1)), "conv4", "x")


def test_dlpack_runs_with_the_arrays_device_current(cuda, monkeypatch):
    # With several GPUs the producer records its ordering events on the current device: it must be the array's.
    log = []

    @contextlib.contextmanager
    def using_device(device):
        log.append(("enter", device))
        yield
        log.append(("exit", device))

    class Logged(FakeDLPack):
        def __dlpack__(self, **keywords):
            log.append(("__dlpack__", keywords["stream"]))
            return super().__dlpack__(**keywords)

    monkeypatch.setattr(rt, "using_device", using_device)
    v = as_device_view(Logged(np.zeros(2, np.float32), device=(2, 1)), "conv4", "x", stream=0x70)
    assert log == [("enter", 1), ("__dlpack__", 0x70), ("exit", 1)] and v.device == 1
    v.release(enqueued=False)


def test_the_previous_device_is_restored_after_dlpack(cuda):
    cuda.current = 0
    v = import_dlpack(FakeDLPack(np.zeros(2, np.float32), device=(2, 1)), "conv4", "x", stream=0)
    assert cuda.calls("set_device") == [("set_device", 1), ("set_device", 0)] and cuda.current == 0
    v.release(enqueued=False)


def test_the_fake_producer_poisons_its_structure_on_delete():
    # Guards the fake itself: a consumer reading after the deleter would see 0xFF, not the tensor.
    p = FakeDLPack(np.zeros(3, np.float32))
    capsule = p.__dlpack__(stream=1, max_version=(1, 1))
    imported = DLPackImport(capsule, "conv4", "x")
    address, size = imported._managed, ctypes.sizeof(abi.DLManagedTensorVersioned)
    keep = p._keep[address]  # the memory stays allocated, so it can be inspected after the deleter
    imported.close()
    assert ctypes.string_at(address, size) == b"\xff" * size
    del keep


def test_deleters_run_only_after_our_work_completes(cuda):
    p = FakeDLPack(np.zeros(3, np.float32))
    v = as_device_view(p, "conv4", "x", stream=0x90)
    v.release()
    (record,) = cuda.calls("record")
    assert record[2:] == (0x90, 0) and p.deleted == 0 and safepoints.pending() == 1
    safepoints.drain()
    assert p.deleted == 0  # still running
    cuda.complete(stream=0x90)
    safepoints.drain()
    assert p.deleted == 1 and safepoints.pending() == 0
