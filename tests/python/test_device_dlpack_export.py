"""The C++ DLPack exporter (csrc/bindings/bind_dlpack.cpp): capsules over host memory, consumed by
knetcnn's own importer and, for host-device capsules, by NumPy's ``np.from_dlpack``."""

import ctypes
import gc
import sys
import weakref

import numpy as np
import pytest

from knetcnn._core import core
from knetcnn.device import dlpack_abi as abi
from knetcnn.device.dlpack_export import export_capsule
from knetcnn.device.dlpack_import import DLPackImport

KDLCPU, KDLCUDA = 1, 2


class Owner:
    pass


def export(a, *, versioned, device_type=KDLCPU, owner=None, **keywords):
    strides = tuple(s // a.itemsize for s in a.strides)
    return export_capsule(ptr=a.ctypes.data, shape=a.shape, strides=strides, dtype=a.dtype.name,
                          device_type=device_type, device_id=0, owner=a if owner is None else owner,
                          versioned=versioned, **keywords)


class HostProducer:
    """Hands NumPy a prepared host capsule (NumPy asks only host producers)."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack_device__(self):
        return (KDLCPU, 0)

    def __dlpack__(self, **keywords):
        return self.capsule


@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_round_trip_through_our_importer(versioned, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    owner = Owner()
    ref = weakref.ref(owner)
    capsule = export(a, versioned=versioned, device_type=KDLCUDA, owner=owner, copied=True)
    del owner
    assert abi.capsule_name(capsule) == (b"dltensor_versioned" if versioned else b"dltensor")
    imported = DLPackImport(capsule, "test", "a")
    t = imported.struct.dl_tensor
    assert (t.data, t.device.device_type, t.device.device_id, t.ndim, t.byte_offset) == (a.ctypes.data, 2, 0,
                                                                                         len(shape), 0)
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (2, 32, 1)
    assert [t.shape[i] for i in range(t.ndim)] == list(shape)
    assert [t.strides[i] for i in range(t.ndim)] == [s // 4 for s in a.strides]
    assert bool(t.shape) and bool(t.strides)  # valid pointers even for a 0-d tensor
    assert imported.struct.manager_ctx == id(ref())
    if versioned:
        assert (imported.struct.version.major, imported.struct.version.minor) == (1, 1)
        assert imported.struct.flags == abi.FLAG_IS_COPIED
    assert ref() is not None
    imported.close()
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("versioned", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_reads_a_host_capsule(versioned, dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)[:, ::2]  # strided: strides travel in elements
    owner = Owner()
    owner.a = a
    ref = weakref.ref(owner)
    b = np.from_dlpack(HostProducer(export(a, versioned=versioned, owner=owner)))
    del owner
    np.testing.assert_array_equal(b, a)
    assert b.ctypes.data == a.ctypes.data  # no copy: NumPy reads our structure
    gc.collect()
    assert ref() is not None  # NumPy's array holds the tensor
    del b
    gc.collect()
    assert ref() is None  # NumPy called our deleter


def test_readonly_flag_reaches_numpy():
    a = np.arange(4, dtype=np.float32)
    b = np.from_dlpack(HostProducer(export(a, versioned=True, readonly=True)))
    assert not b.flags.writeable


@pytest.mark.parametrize("versioned", [True, False])
def test_an_unconsumed_capsule_runs_the_deleter(versioned):
    owner = Owner()
    ref = weakref.ref(owner)
    capsule = export(np.zeros(3, np.float32), versioned=versioned, owner=owner)
    del owner
    assert ref() is not None
    del capsule
    gc.collect()
    assert ref() is None


def test_a_consumed_capsule_does_not_run_the_deleter_again():
    count = []
    owner = Owner()
    weakref.finalize(owner, count.append, 1)
    capsule = export(np.zeros(3, np.float32), versioned=True, owner=owner)
    del owner
    DLPackImport(capsule, "test", "a").close()
    assert count == [1]
    del capsule
    gc.collect()
    assert count == [1]


def test_the_destructor_keeps_a_pending_exception():
    # NumPy takes a CUDA capsule, refuses the device and drops the capsule with its error set: our
    # destructor then runs the deleter, whose owner's finalizer runs Python code. The consumer's
    # error must come through intact (not a SystemError about a lost or replaced exception).
    ran = []
    owner = Owner()
    weakref.finalize(owner, lambda: ran.append(sum(range(10))))  # Python code, at an awkward time

    class CudaProducer(HostProducer):
        def __dlpack_device__(self):
            return (KDLCPU, 0)  # NumPy only asks host producers; the capsule then says CUDA

    capsule = export(np.zeros(3, np.float32), versioned=True, device_type=KDLCUDA, owner=owner)
    producer = CudaProducer(capsule)
    del owner, capsule
    with pytest.raises(Exception) as error:
        np.from_dlpack(producer)
    assert not isinstance(error.value, SystemError)
    del producer
    gc.collect()
    assert ran == [45]


def test_many_exports_leave_no_reference_behind():
    a = np.zeros(8, np.float32)
    refcount = sys.getrefcount(a)
    for i in range(300):
        capsule = export(a, versioned=bool(i % 2))
        if i % 3:
            DLPackImport(capsule, "test", "a").close()
        del capsule
    gc.collect()
    assert sys.getrefcount(a) == refcount


@pytest.mark.parametrize("arguments, message", [
    (dict(shape=[2, 3], strides=[1]), "shape and strides must have the same length"),
    (dict(shape=[1] * 65, strides=[1] * 65), "more than 64 axes"),
    (dict(code=256), "dtype code must be 0..255"),
    (dict(bits=0), "dtype code must be 0..255 and bits 1..255"),
    (dict(device_type=10), "device_type must be kDLCPU \\(1\\) or kDLCUDA \\(2\\)"),
    (dict(device_id=-1), "device_id must be >= 0"),
    (dict(owner=None), "an owner object is required"),
])
def test_binding_refusals(arguments, message):
    keywords = dict(data=0, shape=[2], strides=[1], code=2, bits=32, device_type=2, device_id=0, owner=Owner(),
                    versioned=True)
    keywords.update(arguments)
    with pytest.raises(ValueError, match=f"dlpack_capsule: {message}"):
        core.dlpack_capsule(**keywords)


@pytest.mark.parametrize("data", [-1, 2**64])
def test_pointers_must_fit_64_bits(data):
    with pytest.raises(TypeError):
        core.dlpack_capsule(data, [1], [1], 2, 32, 2, 0, Owner(), True)


def test_capsule_layout_matches_the_ctypes_view():
    # The C++ structure is read back through the importer's ctypes declarations, field by field.
    a = np.zeros((2, 2), np.float64)
    capsule = export(a, versioned=True, device_type=KDLCUDA)
    address = abi.capsule_get_pointer(capsule, abi.name_ptr(b"dltensor_versioned"))
    managed = abi.DLManagedTensorVersioned.from_address(address)
    assert managed.deleter and managed.manager_ctx == id(a)
    assert ctypes.c_uint32.from_address(address).value == 1  # version.major at offset 0
    assert ctypes.c_int32.from_address(address + 32 + 16).value == 2  # dl_tensor.ndim at 32 + 16
    assert ctypes.c_uint8.from_address(address + 32 + 21).value == 64  # dl_tensor.dtype.bits at 32 + 21
