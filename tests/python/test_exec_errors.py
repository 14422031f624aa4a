"""The exec_* entry points' checks, all made before cuDNN runs, and the error that says why no GPU
can run a call (here: no driver)."""

import pytest

import knetcnn
from knetcnn._core import core

NO_GPU = core.device_unavailable_reason(0)


def fake(n):
    """A non-null, well-separated address that is never read."""
    return n << 32


CONV = core.conv4_geometry("conv4", (4, 3, 3, 3), (2, 3, 8, 8), 1, 1, 1, 0, 1)
DECONV = core.deconv4_geometry("deconv4", (3, 4, 3, 3), (2, 3, 8, 8), 1, 1, 1, 0, 1, 0)
POOL = core.pool_geometry("pool", (2, 3, 8, 8), 2, 0, None, 0, 1)
UNPOOL = core.unpool_geometry("unpool", (2, 3, 4, 4), 2, 0, None, 0)

# (op, call with pointers p1..pn, the argument names in order)
CALLS = [
    ("conv4", lambda *p, **k: core.exec_conv4(CONV, "float32", *p, **k), ("w", "x", "y")),
    ("conv4x", lambda *p, **k: core.exec_conv4x(CONV, "float32", *p, **k), ("w", "dy", "dx")),
    ("conv4w", lambda *p, **k: core.exec_conv4w(CONV, "float64", *p, **k), ("x", "dy", "dw")),
    ("deconv4", lambda *p, **k: core.exec_deconv4(DECONV, "float16", *p, **k), ("w", "x", "y")),
    ("deconv4w", lambda *p, **k: core.exec_deconv4w(DECONV, "bfloat16", *p, **k), ("x", "dy", "dw")),
    ("deconv4x", lambda *p, **k: core.exec_deconv4x(DECONV, "float32", *p, **k), ("w", "dy", "dx")),
    ("pool", lambda *p, **k: core.exec_pool(POOL, "float32", *p, **k), ("x", "y")),
    ("poolx", lambda *p, **k: core.exec_poolx(POOL, "float32", *p, **k), ("x", "y", "dy", "dx")),
    ("unpool", lambda *p, **k: core.exec_unpool(UNPOOL, "float32", *p, **k), ("x", "y")),
    ("unpoolx", lambda *p, **k: core.exec_unpoolx(UNPOOL, "float32", *p, **k), ("dy", "dx")),
]


@pytest.mark.parametrize("op, call, names", CALLS, ids=[c[0] for c in CALLS])
def test_null_pointers_are_value_errors_naming_the_argument(op, call, names):
    for i, name in enumerate(names):
        pointers = [fake(j + 1) for j in range(len(names))]
        pointers[i] = 0
        with pytest.raises(ValueError, match=rf"^{op}: {name} is a null device pointer"):
            call(*pointers)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is usable here")
@pytest.mark.parametrize("op, call, names", CALLS, ids=[c[0] for c in CALLS])
def test_without_a_gpu_every_op_says_why_and_how_to_fix_it(op, call, names):
    with pytest.raises(knetcnn.DeviceUnavailableError) as e:
        call(*[fake(j + 1) for j in range(len(names))], alpha=2.0, stream=0)
    message = str(e.value)
    assert "no GPU is usable" in message and NO_GPU in message
    assert "driver" in message  # why: here, no NVIDIA driver
    assert "install" in message or "CUDA_VISIBLE_DEVICES" in message  # how to fix it


@pytest.mark.parametrize("op, call, names", CALLS, ids=[c[0] for c in CALLS])
def test_element_misaligned_pointers_are_value_errors_naming_the_argument(op, call, names):
    # A misaligned element access faults the GPU and ends the CUDA context (semantics.md section 6:
    # no input may crash): refused before the device is looked at, whatever the device state.
    element = {"conv4w": 8, "deconv4": 2, "deconv4w": 2}.get(op, 4)  # the dtypes CALLS use
    for i, name in enumerate(names):
        pointers = [fake(j + 1) for j in range(len(names))]
        pointers[i] += element // 2 if element > 1 else 1
        with pytest.raises(ValueError, match=rf"^{op}: {name} = 0x[0-9a-f]+ is not a multiple of {element} bytes"):
            call(*pointers)
    # Element-aligned (if not 16-byte aligned) passes this check.
    pointers = [fake(j + 1) + element for j in range(len(names))]
    with pytest.raises((knetcnn.DeviceUnavailableError, ValueError)) as e:
        call(*pointers)
    assert "not a multiple" not in str(e.value)


def test_geometry_kind_dtype_and_scalings():
    with pytest.raises(ValueError, match="conv4: the geometry was built for deconv4"):
        core.exec_conv4(DECONV, "float32", fake(1), fake(2), fake(3))
    with pytest.raises(ValueError, match="unpool: the geometry was built for pool"):
        core.exec_unpool(POOL, "float32", fake(1), fake(2))
    with pytest.raises(TypeError, match="dtype 'int8' is not supported"):
        core.exec_pool(POOL, "int8", fake(1), fake(2))
    with pytest.raises(ValueError, match="conv4: alpha=nan"):
        core.exec_conv4(CONV, "float32", fake(1), fake(2), fake(3), alpha=float("nan"))
    with pytest.raises(ValueError, match="pool: beta=inf"):
        core.exec_pool(POOL, "float32", fake(1), fake(2), beta=float("inf"))
    with pytest.raises(ValueError, match="alpha must be non-zero"):
        core.exec_unpool(UNPOOL, "float32", fake(1), fake(2), alpha=0.0)
    with pytest.raises(ValueError, match="device=-1"):
        core.exec_pool(POOL, "float32", fake(1), fake(2), device=-1)
    with pytest.raises(TypeError):
        core.exec_pool(POOL, "float32", -5, fake(2))  # not an address


def test_strides_filters_and_aliasing():
    with pytest.raises(ValueError, match="conv4: x strides .* do not match its shape"):
        core.exec_conv4(CONV, "float32", fake(1), fake(2), fake(3), x_strides=(1, 2))
    with pytest.raises(ValueError, match="conv4: y .* sharing memory"):
        core.exec_conv4(CONV, "float32", fake(1), fake(2), fake(3), y_strides=(0, 64, 8, 1))
    with pytest.raises(ValueError, match="conv4w: dw has strides .* C-contiguous"):
        core.exec_conv4w(CONV, "float32", fake(1), fake(2), fake(3), dw_strides=(27, 1, 9, 3))
    with pytest.raises(ValueError, match="poolx: the result dx shares memory with the input dy"):
        core.exec_poolx(POOL, "float32", fake(1), fake(2), fake(3), fake(3) + 4)
    with pytest.raises(ValueError, match=r"pool: x strides .* 0\.\.2147483647"):
        core.exec_pool(POOL, "float32", fake(1), fake(2), x_strides=(-1, 64, 8, 1))


def test_docstrings_say_which_pointer_is_which():
    assert "deconv4's x as cuDNN's dy" in core.exec_deconv4.__doc__
    assert "geometry.input_shape" in core.exec_deconv4.__doc__
    assert "prod(window)/alpha" in core.exec_unpool.__doc__
    assert "element strides" in core.exec_conv4.__doc__
    for name in ("conv4", "conv4x", "conv4w", "deconv4", "deconv4w", "deconv4x", "pool", "poolx", "unpool",
                 "unpoolx"):
        assert "DeviceUnavailableError" in getattr(core, "exec_" + name).__doc__


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_scalings_must_fit_a_float_for_float_scaled_types(dtype):
    with pytest.raises(ValueError, match=r"conv4: alpha=1e\+39: .* as a float"):
        core.exec_conv4(CONV, dtype, fake(1), fake(2), fake(3), alpha=1e39)
    with pytest.raises(ValueError, match=r"pool: beta=-1e\+300: .*infinity"):
        core.exec_pool(POOL, dtype, fake(1), fake(2), beta=-1e300)


def test_double_data_takes_double_scalings():
    # Past the checks (here: to the missing device; on a GPU machine the fake pointers are refused).
    with pytest.raises((knetcnn.DeviceUnavailableError, ValueError)) as e:
        core.exec_conv4(CONV, "float64", fake(1), fake(2), fake(3), alpha=1e39)
    assert "as a float" not in str(e.value)


def test_geometry_refuses_sizes_cudnn_computes_in_int32():
    big = 2**31 - 1
    with pytest.raises(ValueError, match=r"pool: padding=2: the padded size X \+ 2\*padding must be <= 2147483647"):
        core.pool_geometry("pool", (1, 1, big - 2), 3, 2, 1, 0, 1)
    with pytest.raises(ValueError, match=r"conv4: padding=6: .*32-bit ints"):
        core.conv4_geometry("conv4", (1, 1, 3), (1, 1, big - 10), 6, 1, 1, 0, 1)
