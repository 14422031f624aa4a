"""The foundation: loading, info, errors, and the descriptors cuDNN is given (read back from the
real libcudnn: host-only calls that work without a GPU)."""

import itertools
import json
import random
import subprocess
import sys

import pytest

import knetcnn
from knetcnn import _errors
from knetcnn._core import core


def test_info_reports_versions_and_backends():
    r = knetcnn.info()
    assert r["knetcnn"] == knetcnn.__version__
    assert r["cudnn_runtime"].split(".")[0] == r["cudnn_build"].split(".")[0] == "9"
    assert r["cuda_runtime"].startswith("12.")
    assert r["backends"]["cpu"]["usable"] is True
    # Either devices are listed, or the reason there are none is given; never both, never neither.
    assert bool(r["devices"]) != bool(r["no_device_reason"])
    assert r["backends"]["cudnn"]["usable"] == bool(r["devices"])


def test_python_dash_m_info_exits_zero():
    out = subprocess.run([sys.executable, "-m", "knetcnn", "info"], capture_output=True, text=True, check=True)
    assert "cuDNN" in out.stdout and "backend cpu" in out.stdout
    js = subprocess.run([sys.executable, "-m", "knetcnn", "info", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(js.stdout)["backends"]["cpu"]["usable"] is True


def test_require_device_says_why():
    reason = core.device_unavailable_reason(0)
    if reason:
        with pytest.raises(knetcnn.DeviceUnavailableError, match="no GPU is usable") as e:
            core.require_device(0)
        assert reason in str(e.value)
    else:
        core.require_device(0)  # a GPU machine: must not raise


def test_conv_descriptor_padding_order_and_fields():
    d = knetcnn.describe("conv4", (8, 3, 5, 3), (2, 3, 32, 31), padding=(1, 2), stride=(2, 1), dilation=(1, 3), mode=1)
    assert d["input"]["dims"] == [2, 3, 32, 31]
    assert d["input"]["strides"] == [3 * 32 * 31, 32 * 31, 31, 1]
    assert d["filter"] == {"data_type": "CUDNN_DATA_FLOAT", "format": "CUDNN_TENSOR_NCHW", "dims": [8, 3, 5, 3]}
    c = d["convolution"]
    assert (c["padding"], c["stride"], c["dilation"]) == ([1, 2], [2, 1], [1, 3])
    assert c["mode"] == "CUDNN_CROSS_CORRELATION" and c["group_count"] == 1
    assert d["cudnn_forward_output_dims"] == list(d["geometry"]["output_shape"]) == d["output"]["dims"]


def test_one_d_is_lifted_with_a_singleton_axis():
    d = knetcnn.describe("conv4", (1, 1, 3), (1, 1, 7), padding=1, stride=3)
    assert d["input"]["dims"] == [1, 1, 1, 7]
    assert d["convolution"]["padding"] == [0, 1] and d["convolution"]["stride"] == [1, 3]
    assert d["convolution"]["mode"] == "CUDNN_CONVOLUTION"
    assert d["cudnn_forward_output_dims"] == [1, 1, 1, 3]
    p = knetcnn.describe("pool", (2, 3, 9), window=3, padding=1, mode=2)
    assert p["pooling"]["window"] == [1, 3] and p["pooling"]["padding"] == [0, 1] and p["pooling"]["stride"] == [1, 3]
    assert p["cudnn_forward_output_dims"] == [2, 3, 1, 3]


@pytest.mark.parametrize(
    "dtype, data, compute, math, math_tf32",
    [
        ("float16", "CUDNN_DATA_HALF", "CUDNN_DATA_FLOAT", "CUDNN_TENSOR_OP_MATH", "CUDNN_TENSOR_OP_MATH"),
        ("bfloat16", "CUDNN_DATA_BFLOAT16", "CUDNN_DATA_FLOAT", "CUDNN_TENSOR_OP_MATH", "CUDNN_TENSOR_OP_MATH"),
        ("float32", "CUDNN_DATA_FLOAT", "CUDNN_DATA_FLOAT", "CUDNN_FMA_MATH", "CUDNN_DEFAULT_MATH"),
        ("float64", "CUDNN_DATA_DOUBLE", "CUDNN_DATA_DOUBLE", "CUDNN_DEFAULT_MATH", "CUDNN_DEFAULT_MATH"),
    ],
)
def test_dtype_compute_and_math_types(dtype, data, compute, math, math_tf32):
    d = knetcnn.describe("conv4", (4, 2, 3, 3, 3), (1, 4, 5, 5, 5), group=2, dtype=dtype)
    assert d["input"]["data_type"] == d["filter"]["data_type"] == d["output"]["data_type"] == data
    assert d["convolution"]["compute_type"] == compute
    assert d["convolution"]["math_type"] == math
    assert d["convolution"]["group_count"] == 2
    assert knetcnn.describe("conv4", (4, 2, 3, 3), (1, 4, 5, 5), group=2, dtype=dtype, allow_tf32=True)[
        "convolution"]["math_type"] == math_tf32


def test_pool_modes_nan_and_unpool_mapping():
    names = ["CUDNN_POOLING_MAX", "CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING",
             "CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING", "CUDNN_POOLING_MAX_DETERMINISTIC"]
    for mode, name in enumerate(names):
        assert knetcnn.describe("pool", (1, 1, 4, 4), mode=mode)["pooling"]["mode"] == name
        unpool_mode = knetcnn.describe("unpool", (1, 1, 4, 4), mode=mode)["pooling"]["mode"]
        assert unpool_mode == names[{0: 1, 1: 2, 2: 1, 3: 1}[mode]]
    assert knetcnn.describe("pool", (1, 1, 4, 4))["pooling"]["nan_propagation"] == "CUDNN_PROPAGATE_NAN"
    assert knetcnn.describe("pool", (1, 1, 4, 4), maxpoolingNanOpt=0)["pooling"]["nan_propagation"] == "CUDNN_NOT_PROPAGATE_NAN"


def test_deconv_and_unpool_descriptors_are_in_forward_terms():
    d = knetcnn.describe("deconv4", (4, 3, 3, 3), (2, 4, 5, 5), stride=2, output_padding=1)
    assert d["input"]["dims"] == [2, 3, 12, 12]  # deconv4's result
    assert d["output"]["dims"] == [2, 4, 5, 5]  # deconv4's x
    assert d["cudnn_forward_output_dims"] == [2, 4, 5, 5]
    u = knetcnn.describe("unpool", (1, 2, 3, 3))
    assert u["input"]["dims"] == [1, 2, 6, 6] and u["cudnn_forward_output_dims"] == [1, 2, 3, 3]


def test_random_sweep_cudnn_agrees_with_core_output_sizes():
    rng = random.Random(1234)
    checked = 0
    while checked < 300:
        nd = rng.randint(1, 3)
        kernel = [rng.randint(1, 4) for _ in range(nd)]
        dil = [rng.randint(1, 3) for _ in range(nd)]
        pad = [rng.randint(0, 3) for _ in range(nd)]
        stride = [rng.randint(1, 4) for _ in range(nd)]
        size = [rng.randint(1, 12) for _ in range(nd)]
        if any(x + 2 * p < (k - 1) * d + 1 for x, p, k, d in zip(size, pad, kernel, dil)):
            continue
        d = knetcnn.describe("conv4", (2, 3, *kernel), (1, 3, *size), padding=pad, stride=stride, dilation=dil,
                             dtype=rng.choice(["float16", "float32", "float64", "bfloat16"]))
        out = list(d["geometry"]["output_shape"])
        lifted = out if nd > 1 else out[:2] + [1] + out[2:]
        assert d["cudnn_forward_output_dims"] == lifted, (kernel, dil, pad, stride, size)
        checked += 1


def test_bad_arguments_are_caught_before_cudnn():
    with pytest.raises(ValueError, match=r"conv4: padding=\(1, -2\): padding must be >= 0"):
        knetcnn.describe("conv4", (8, 3, 5, 3), (2, 3, 32, 32), padding=(1, -2))
    with pytest.raises(TypeError, match="conv4: padding=1.5: padding must be an int"):
        knetcnn.describe("conv4", (8, 3, 5, 3), (2, 3, 32, 32), padding=1.5)
    with pytest.raises(TypeError, match="stride=True"):
        knetcnn.describe("pool", (1, 1, 4, 4), stride=True)
    with pytest.raises(TypeError, match="dtype 'int32' is not supported"):
        knetcnn.describe("pool", (1, 1, 4, 4), dtype="int32")
    with pytest.raises(ValueError, match="op must be one of"):
        knetcnn.describe("conv5", (1, 1, 4, 4))


def test_tensors_over_int32_elements_are_refused_without_allocating():
    with pytest.raises(ValueError, match="at most 2147483647 elements"):
        core.describe_tensor("float32", (2**16, 2**16, 1, 1))
    with pytest.raises(ValueError, match="cannot address"):
        core.describe_tensor("float32", (2, 2, 2, 2), (2**30, 2**30, 1, 1))
    ok = core.describe_tensor("float32", (2, 1, 3, 4), (99, 7, 4, 1))
    assert ok["strides"] == [99, 12, 4, 1]  # the size-1 channel axis gets its packed stride


def test_cudnn_status_names_map_to_exception_classes():
    cases = {
        "CUDNN_STATUS_ALLOC_FAILED": (MemoryError, knetcnn.CudnnMemoryError),
        "CUDNN_STATUS_NOT_SUPPORTED": (NotImplementedError, knetcnn.CudnnNotSupportedError),
        "CUDNN_STATUS_NOT_SUPPORTED_SHAPE": (NotImplementedError, knetcnn.CudnnNotSupportedError),
        "CUDNN_STATUS_BAD_PARAM_NULL_POINTER": (ValueError, knetcnn.CudnnBadParamError),
        "CUDNN_STATUS_EXECUTION_FAILED": (RuntimeError, knetcnn.CudnnError),
    }
    for status, (base, cls) in cases.items():
        e = _errors.cudnn_error("cudnnFoo failed", 2000, status, "cudnnFoo")
        assert type(e) is cls and isinstance(e, base) and isinstance(e, knetcnn.CudnnError)
        assert e.status == status and e.function == "cudnnFoo"
    assert isinstance(_errors.cuda_error("m", 2, "cudaErrorMemoryAllocation"), MemoryError)


def test_keyword_combinations_match_describe_fields():
    # Every keyword reaches the descriptor in the spatial axes' order, for each rank.
    for nd, (p, s, dl) in itertools.product([2, 3], [((0, 1, 2), (1, 2, 3), (2, 1, 1))]):
        d = knetcnn.describe("conv4", (2, 2) + (2,) * nd, (1, 2) + (9,) * nd, padding=p[:nd], stride=s[:nd],
                             dilation=dl[:nd])
        c = d["convolution"]
        assert (c["padding"], c["stride"], c["dilation"]) == (list(p[:nd]), list(s[:nd]), list(dl[:nd]))
