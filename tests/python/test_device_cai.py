"""__cuda_array_interface__ parsing (versions 0-3), with fake producers over host memory: only
parsed, never computed on. Every refusal is checked for naming the function and argument."""

import gc
import weakref

import numpy as np
import pytest

import knetcnn
from knetcnn.device import as_device_view, safepoints
from knetcnn.device import cuda_runtime as rt
from knetcnn.device.cai import parse_cai, parse_typestr

from fake_device_arrays import FakeCAI, FakeCAIWithDevice, cai_of


@pytest.mark.parametrize("typestr, name", [("<f2", "float16"), ("<f4", "float32"), ("<f8", "float64"),
                                           ("=f4", "float32")])
def test_float_typestrs(typestr, name):
    assert parse_typestr(typestr, "conv4", "x") == name


@pytest.mark.parametrize("typestr", [">f4", ">f8", ">f2"])
def test_big_endian_is_refused(typestr):
    with pytest.raises(ValueError, match=r"conv4: x .*big-endian"):
        parse_typestr(typestr, "conv4", "x")


@pytest.mark.parametrize("typestr, described", [("<i4", "int32"), ("|u1", "uint8"), ("<c8", "complex64"),
                                                ("|b1", "bool8")])
def test_non_float_typestrs_are_type_errors(typestr, described):
    with pytest.raises(TypeError, match=rf"pool: w has element type {described}.*float16, float32, float64"):
        parse_typestr(typestr, "pool", "w")


@pytest.mark.parametrize("typestr", ["f4", "<f", "xf4", "<fx", ""])
def test_malformed_typestrs(typestr):
    with pytest.raises(ValueError, match="not a NumPy array-interface typestr"):
        parse_typestr(typestr, "conv4", "x")


def test_typestr_must_be_str():
    with pytest.raises(TypeError, match="typestr must be a str"):
        parse_typestr(4, "conv4", "x")


def test_multibyte_without_byte_order_is_refused():
    with pytest.raises(ValueError, match=r"needs a byte order"):
        parse_typestr("|f4", "conv4", "x")


def test_bfloat16_needs_the_object_to_say_so():
    # PyTorch spells bfloat16 "<f2"; only the object's dtype tells it from float16.
    assert parse_typestr("<f2", "conv4", "x", declared="torch.bfloat16") == "bfloat16"
    assert parse_typestr("<f2", "conv4", "x", declared="float16") == "float16"
    assert parse_typestr("<V2", "conv4", "x", declared="bfloat16") == "bfloat16"
    with pytest.raises(TypeError, match=r"cannot be told to be bfloat16; pass it through DLPack"):
        parse_typestr("<V2", "conv4", "x", declared="")


def test_raw_bytes_without_byte_order_read_like_little_endian_ones():
    # NumPy spells void types '|V2' (raw bytes have no byte order): the same rules as '<V2'.
    assert parse_typestr("|V2", "conv4", "x", declared="bfloat16") == "bfloat16"
    with pytest.raises(TypeError, match=r"conv4: x .*typestr='\|V2' \(2 raw bytes\) and dtype unknown: "
                                        r"it cannot be told to be bfloat16; pass it through DLPack"):
        parse_typestr("|V2", "conv4", "x")
    with pytest.raises(ValueError, match="needs a byte order"):
        parse_typestr("|f2", "conv4", "x")  # a float does have one


def test_object_dtype_is_used_for_bfloat16(cuda):
    buf = np.zeros((2, 3), np.uint16)
    x = FakeCAIWithDevice(cai_of(buf, typestr="<f2"), dtype="torch.bfloat16")
    v = as_device_view(x, "conv4", "x")
    assert v.dtype == "bfloat16" and v.itemsize == 2


def test_full_view_of_a_contiguous_array():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    v = parse_cai(cai_of(a), "conv4", "x")
    assert (v.ptr, v.shape, v.strides, v.dtype) == (a.ctypes.data, (2, 3, 4), (12, 4, 1), "float32")
    assert v.is_c_contiguous and v.byte_strides == a.strides and v.nbytes == a.nbytes
    assert v.readonly is False and v.producer_stream is None and v.device == -1


def test_strides_none_means_c_contiguous():
    a = np.zeros((3, 5), np.float64)
    v = parse_cai(cai_of(a, strides=None), "conv4", "x")
    assert v.strides == (5, 1) and v.is_c_contiguous


def test_byte_strides_become_element_strides():
    a = np.zeros((4, 6), np.float64)[:, ::2]  # byte strides (48, 16)
    v = parse_cai(cai_of(a), "conv4", "x")
    assert v.strides == (6, 2) and not v.is_c_contiguous


def test_fortran_order_strides():
    a = np.asfortranarray(np.zeros((3, 4), np.float32))
    v = parse_cai(cai_of(a), "conv4", "x")
    assert v.strides == (1, 3)


def test_strides_not_a_multiple_of_itemsize_are_refused():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv4: x .*stride 6 of axis 0 is not a multiple of the 4-byte float32"):
        parse_cai(cai_of(a, strides=(6, 4)), "conv4", "x")


def test_negative_strides_are_refused_with_advice():
    a = np.zeros((3, 4), np.float32)[::-1]
    with pytest.raises(ValueError, match=r"negative strides .*make a contiguous copy"):
        parse_cai(cai_of(a), "conv4", "x")


def test_extent_one_strides_are_canonical():
    # A stride on an extent-1 axis addresses nothing; PyTorch reports arbitrary ones there.
    a = np.zeros((1, 3), np.float32)
    v = parse_cai(cai_of(a, strides=(-4, 4)), "conv4", "x")
    assert v.strides == (3, 1) and v.is_c_contiguous


def test_strides_length_must_match():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="one stride per axis"):
        parse_cai(cai_of(a, strides=(4,)), "conv4", "x")


def test_readonly_flag():
    a = np.zeros(3, np.float32)
    v = parse_cai(cai_of(a, data=(a.ctypes.data, True)), "conv4", "x")
    assert v.readonly is True


@pytest.mark.parametrize("data, error, message", [
    ((123,), TypeError, "data must be a 2-tuple"),
    ((1.5, False), TypeError, "the pointer must be an int"),
    ((True, False), TypeError, "the pointer must be an int"),
    ((16, 1), TypeError, "the read-only flag must be a bool"),
    ((-8, False), ValueError, "must be >= 0"),
    ((2**64, False), ValueError, "must be >= 0 and < 2\\*\\*64"),
    ((2**70 + 16, False), ValueError, "< 2\\*\\*64"),
    ((0, False), ValueError, "only zero-size arrays may use 0"),
])
def test_bad_data_entries(data, error, message):
    a = np.zeros(3, np.float32)
    with pytest.raises(error, match=message):
        parse_cai(cai_of(a, data=data), "conv4", "x")


@pytest.mark.parametrize("dtype, offset", [(np.float32, 2), (np.float32, 1), (np.float64, 4), (np.float16, 1)])
def test_misaligned_pointers_are_refused(dtype, offset):
    # A misaligned load is a sticky CUDA error that ends the process's CUDA context: refuse it first.
    a = np.zeros(8, dtype)
    with pytest.raises(ValueError, match=r"conv4: x has __cuda_array_interface__ data pointer 0x[0-9a-f]+, which is "
                                         r"not a multiple of the \d-byte float\d+ element \(misaligned\)"):
        parse_cai(cai_of(a, data=(a.ctypes.data + offset, False)), "conv4", "x")


def test_zero_size_array_may_have_null_pointer():
    a = np.zeros((0, 3), np.float32)
    v = parse_cai(cai_of(a, data=(0, False)), "conv4", "x")
    assert v.ptr == 0 and v.size == 0


def test_mask_is_refused():
    a = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"conv4: x has __cuda_array_interface__ a mask: masked arrays are not"):
        parse_cai(cai_of(a, mask=FakeCAI(cai_of(np.ones(3, bool)))), "conv4", "x")
    assert parse_cai(cai_of(a, mask=None), "conv4", "x").shape == (3,)


@pytest.mark.parametrize("key", ["shape", "typestr", "data", "version"])
def test_missing_required_entries(key):
    cai = cai_of(np.zeros(3, np.float32))
    del cai[key]
    with pytest.raises(ValueError, match=rf"conv4: x has __cuda_array_interface__ without the required entry '{key}'"):
        parse_cai(cai, "conv4", "x")


def test_not_a_dict():
    with pytest.raises(TypeError, match="it must be a dict"):
        parse_cai([1, 2], "conv4", "x")


@pytest.mark.parametrize("shape, error", [((2, -1), ValueError), ((2.0, 3), TypeError), ((True, 3), TypeError),
                                          (5, TypeError)])
def test_bad_shapes(shape, error):
    with pytest.raises(error, match="shape"):
        parse_cai(cai_of(np.zeros(6, np.float32), shape=shape, strides=None), "conv4", "x")


def test_version_2_without_stream_parses():
    a = np.zeros((2, 2), np.float16)
    cai = cai_of(a, version=2)
    del cai["stream"]
    v = parse_cai(cai, "conv4", "x")
    assert v.dtype == "float16" and v.producer_stream is None


def test_versions_before_3_ignore_a_stream_entry():
    a = np.zeros(2, np.float32)
    assert parse_cai(cai_of(a, version=2, stream=77), "conv4", "x").producer_stream is None
    assert parse_cai(cai_of(a, version=0, strides=None), "conv4", "x").strides == (1,)


@pytest.mark.parametrize("version, error", [(4, ValueError), (-1, ValueError), ("3", TypeError), (True, TypeError)])
def test_unknown_versions_are_refused(version, error):
    with pytest.raises(error, match="version"):
        parse_cai(cai_of(np.zeros(2, np.float32), version=version), "conv4", "x")


@pytest.mark.parametrize("stream, expected", [(None, None), (1, 1), (2, 2), (0x7F00DEAD, 0x7F00DEAD)])
def test_stream_entry(stream, expected):
    v = parse_cai(cai_of(np.zeros(2, np.float32), stream=stream), "conv4", "x")
    assert v.producer_stream == expected


def test_missing_stream_entry_means_no_synchronization():
    cai = cai_of(np.zeros(2, np.float32))
    del cai["stream"]
    assert parse_cai(cai, "conv4", "x").producer_stream is None


@pytest.mark.parametrize("stream, error, message", [(0, ValueError, "disallows as ambiguous"),
                                                    (-3, ValueError, "must be positive"),
                                                    (True, TypeError, "must be None or an int"),
                                                    (2.0, TypeError, "must be None or an int")])
def test_bad_stream_entries(stream, error, message):
    with pytest.raises(error, match=message):
        parse_cai(cai_of(np.zeros(2, np.float32), stream=stream), "conv4", "x")


def test_structured_descr_is_refused():
    a = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match="structured descr"):
        parse_cai(cai_of(a, descr=[("a", "<f4"), ("b", "<f4")]), "conv4", "x")


def test_as_device_view_takes_the_device_from_dlpack_device_and_keeps_the_producer_alive(cuda):
    cuda.devices = 4
    a = np.zeros((2, 3), np.float32)
    cuda.pointer_devices[a.ctypes.data] = (3, False)
    x = FakeCAIWithDevice(cai_of(a), dlpack_device=(2, 3))
    ref = weakref.ref(x)
    v = as_device_view(x, "conv4", "x")
    assert v.device == 3 and v.source == "cuda_array_interface" and v.owner is x
    assert cuda.calls("pointer_device") == [("pointer_device", a.ctypes.data)]  # checked once, a GPU being usable
    del x
    v.release()
    assert v.owner is None and v.released
    gc.collect()
    assert ref() is not None  # kept until our work on it has completed
    cuda.complete()
    safepoints.drain()
    assert ref() is None


def test_dlpack_device_and_pointer_must_agree(cuda):
    cuda.devices = 4
    a = np.zeros(3, np.float32)
    cuda.pointer_devices[a.ctypes.data] = (1, False)
    with pytest.raises(ValueError, match=r"conv4: x \(FakeCAIWithDevice\): __dlpack_device__\(\) says CUDA device 2 "
                                         r"but its __cuda_array_interface__ pointer is on device 1"):
        as_device_view(FakeCAIWithDevice(cai_of(a), dlpack_device=(2, 2)), "conv4", "x")
    cuda.pointer_devices[a.ctypes.data] = None  # host memory
    with pytest.raises(ValueError, match=r"conv4: x \(FakeCAIWithDevice\): pointer 0x[0-9a-f]+ is not device memory"):
        as_device_view(FakeCAIWithDevice(cai_of(a), dlpack_device=(2, 1)), "conv4", "x")


def test_without_a_usable_gpu_the_pointer_is_not_queried(cuda, monkeypatch):
    monkeypatch.setattr(rt, "known_device_count", lambda: None)
    v = as_device_view(FakeCAIWithDevice(cai_of(np.zeros(3, np.float32)), dlpack_device=(2, 5)), "conv4", "x")
    assert v.device == 5 and cuda.calls("pointer_device") == []
    v.release(enqueued=False)


@pytest.mark.parametrize("devices, device, message", [(2, -1, "reports CUDA device -1: a device ordinal must be >= 0"),
                                                      (None, -3, "reports CUDA device -3: a device ordinal must be"),
                                                      (2, 2, "reports CUDA device 2, but 2 GPUs are visible"),
                                                      (1, 7, "reports CUDA device 7, but 1 GPU is visible")])
def test_device_ordinals_are_checked(cuda, monkeypatch, devices, device, message):
    monkeypatch.setattr(rt, "known_device_count", lambda: devices)
    x = FakeCAIWithDevice(cai_of(np.zeros(3, np.float32)), dlpack_device=(2, device))
    with pytest.raises(ValueError, match=rf"conv4: x {message}"):
        as_device_view(x, "conv4", "x")


def test_a_zero_size_array_with_a_null_pointer_names_no_device(cuda):
    empty = cai_of(np.zeros((0, 3), np.float32), data=(0, False))
    with pytest.raises(ValueError, match=r"conv4: x \(FakeCAI\) is a zero-size array \(shape \(0, 3\)\) with a null "
                                         r"pointer: it names no device .*knetcnn needs non-empty arrays"):
        as_device_view(FakeCAI(empty), "conv4", "x")
    v = as_device_view(FakeCAIWithDevice(empty, dlpack_device=(2, 1)), "conv4", "x")  # the object says
    assert v.device == 1 and v.size == 0
    v.release()  # nothing can run on no memory: no event, nothing kept
    assert cuda.calls("record") == [] and safepoints.pending() == 0


def test_as_device_view_needs_cuda_to_find_the_device_of_a_bare_cai_pointer():
    # Without __dlpack_device__ the device comes from cudaPointerGetAttributes: no GPU here.
    from knetcnn._core import core
    if not core.device_unavailable_reason(0):
        pytest.skip("a GPU is usable: the pointer query would answer (and reject host memory)")
    x = FakeCAI(cai_of(np.zeros(3, np.float32)))
    with pytest.raises(knetcnn.DeviceUnavailableError, match="^conv4: x: cudaPointerGetAttributes: no GPU is usable"):
        as_device_view(x, "conv4", "x")


def test_a_refusing_property_is_reported_with_the_argument():
    class RequiresGrad:
        def __dlpack_device__(self):
            return (2, 0)

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    with pytest.raises(ValueError, match=r"conv4w: dy \(RequiresGrad\): its __cuda_array_interface__ refused: "
                                         r"RuntimeError: Can't get"):
        as_device_view(RequiresGrad(), "conv4w", "dy")
