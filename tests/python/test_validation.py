"""Bad input: every rule of semantics.md §2 and the type rules give ValueError/TypeError whose
message starts with the function and names the argument and the rule, raised before any work
(the CPU backend is replaced by a trap for these tests)."""

import numpy as np
import pytest

import knetcnn
from knetcnn import _dispatch

f64 = np.float64


def z(*shape, dtype=f64):
    return np.zeros(shape, dtype=dtype)


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    def trap(*args, **kwargs):
        raise AssertionError("the backend ran: validation must come first")

    monkeypatch.setattr(_dispatch.cpu, "run", trap)


W, X = z(2, 3, 3), z(1, 3, 7)  # a valid 1-D conv4 pair: y has shape (1, 2, 5)
DW, DX = z(3, 2, 3), z(1, 3, 5)  # a valid 1-D deconv4 pair: result (1, 2, 7)

VALUE_ERRORS = [
    # (call, function, argument, fragment of the rule)
    (lambda: knetcnn.conv4(W, z(0, 3, 7)), "conv4", "x", "must be > 0"),
    (lambda: knetcnn.conv4(z(2, 0, 3), z(1, 0, 7)), "conv4", "x", "must be > 0"),
    (lambda: knetcnn.conv4(W, z(3, 7)), "conv4", "x", "3, 4 or 5 dimensions"),
    (lambda: knetcnn.conv4(z(2, 3, 1, 1, 1, 3), z(1, 3, 1, 1, 1, 7)), "conv4", "x", "3, 4 or 5 dimensions"),
    (lambda: knetcnn.conv4(z(2, 3, 1, 3), X), "conv4", "w", "as many dimensions as x"),
    (lambda: knetcnn.conv4(W, X, padding=-1), "conv4", "padding", ">= 0"),
    (lambda: knetcnn.conv4(W, X, stride=0), "conv4", "stride", ">= 1"),
    (lambda: knetcnn.conv4(W, X, dilation=0), "conv4", "dilation", ">= 1"),
    (lambda: knetcnn.conv4(W, X, padding=(1, 1)), "conv4", "padding", "one per spatial axis"),
    (lambda: knetcnn.conv4(z(1, 1, 5), z(1, 1, 2)), "conv4", "x", "X + 2*padding >= (K-1)*dilation + 1"),
    (lambda: knetcnn.conv4(z(1, 1, 3), z(1, 1, 4), dilation=2), "conv4", "x", "X + 2*padding >= (K-1)*dilation + 1"),
    (lambda: knetcnn.conv4(z(2, 1, 3), X, group=2), "conv4", "group", "divisible by group"),
    (lambda: knetcnn.conv4(z(2, 1, 3), z(1, 3, 7), group=3), "conv4", "group", "w's output channels"),
    (lambda: knetcnn.conv4(z(2, 2, 3), X), "conv4", "w", "w.shape[1] must be x.shape[1] // group"),
    (lambda: knetcnn.conv4(W, X, mode=2), "conv4", "mode", "mode must be 0"),
    (lambda: knetcnn.conv4(W, X, group=0), "conv4", "group", ">= 1"),
    (lambda: knetcnn.conv4(W, X, alpha=np.inf), "conv4", "alpha", "finite"),
    (lambda: knetcnn.conv4(W, X, alpha=np.nan), "conv4", "alpha", "finite"),
    (lambda: knetcnn.conv4x(W, X, z(1, 2, 4)), "conv4x", "dy", "must have shape (1, 2, 5)"),
    (lambda: knetcnn.conv4w(W, X, z(1, 2, 5, 1)), "conv4w", "dy", "must have shape (1, 2, 5)"),
    (lambda: knetcnn.deconv4(z(2, 2, 3), DX), "deconv4", "w", "x.shape[1] must equal w.shape[0]"),
    (lambda: knetcnn.deconv4(DW, z(1, 3, 1), padding=2), "deconv4", "padding", "must be >= 1"),
    (lambda: knetcnn.deconv4(DW, DX, output_padding=1), "deconv4", "output_padding", "< max(stride, dilation)"),
    (lambda: knetcnn.deconv4(DW, DX, stride=2, output_padding=2), "deconv4", "output_padding", "< max(stride, dilation)"),
    (lambda: knetcnn.deconv4(DW, DX, output_padding=-1), "deconv4", "output_padding", ">= 0"),
    (lambda: knetcnn.deconv4(DW, DX, group=2), "deconv4", "group", "divisible by group"),
    (lambda: knetcnn.deconv4(DW, DX, mode=-1), "deconv4", "mode", "mode must be 0"),
    (lambda: knetcnn.deconv4x(DW, DX, z(1, 2, 5)), "deconv4x", "dy", "must have shape (1, 2, 7)"),
    (lambda: knetcnn.deconv4w(DW, DX, z(1, 2, 8)), "deconv4w", "dy", "must have shape (1, 2, 7)"),
    (lambda: knetcnn.pool(z(1, 1, 6), window=0), "pool", "window", ">= 1"),
    (lambda: knetcnn.pool(z(1, 1, 6), padding=2), "pool", "padding", "padding must be < window"),
    (lambda: knetcnn.pool(z(1, 1, 6), padding=-1), "pool", "padding", ">= 0"),
    (lambda: knetcnn.pool(z(1, 1, 6), stride=0), "pool", "stride", ">= 1"),
    (lambda: knetcnn.pool(z(1, 1, 3), window=6, padding=1), "pool", "window", "window must be <= X + 2*padding"),
    (lambda: knetcnn.pool(z(1, 1, 6), mode=4), "pool", "mode", "mode must be 0 (max)"),
    (lambda: knetcnn.pool(z(1, 1, 6), maxpoolingNanOpt=2), "pool", "maxpoolingNanOpt", "0 (skip NaN) or 1"),
    (lambda: knetcnn.pool(z(1, 0, 6)), "pool", "x", "must be > 0"),
    (lambda: knetcnn.pool(z(1, 1, 6), window=(2, 2)), "pool", "window", "one per spatial axis"),
    (lambda: knetcnn.poolx(z(1, 1, 6), z(1, 1, 2), z(1, 1, 3)), "poolx", "y", "must have shape (1, 1, 3)"),
    (lambda: knetcnn.poolx(z(1, 1, 6), z(1, 1, 3), z(1, 1, 4)), "poolx", "dy", "must have shape (1, 1, 3)"),
    (lambda: knetcnn.unpool(z(1, 1, 1), window=3, padding=2), "unpool", "padding", "must be >= 1"),
    (lambda: knetcnn.unpool(z(1, 1, 2), padding=2), "unpool", "padding", "padding must be < window"),
    (lambda: knetcnn.unpool(z(1, 1, 2), alpha=0), "unpool", "alpha", "non-zero"),
    (lambda: knetcnn.unpool(z(1, 1, 2), mode=5), "unpool", "mode", "mode must be"),
    (lambda: knetcnn.unpoolx(z(1, 1, 2), z(1, 1, 4), z(1, 1, 3)), "unpoolx", "dy", "must have shape (1, 1, 4)"),
    (lambda: knetcnn.unpoolx(z(1, 1, 2), z(1, 1, 5), z(1, 1, 4)), "unpoolx", "y", "must have shape (1, 1, 4)"),
    (lambda: knetcnn.unpoolx(z(1, 1, 2), z(1, 1, 4), z(1, 1, 4), alpha=0.0), "unpoolx", "alpha", "non-zero"),
    (lambda: knetcnn.mat(z(2, 3), dims=3), "mat", "dims", "0..x.ndim"),
    (lambda: knetcnn.mat(z(2, 3), dims=-1), "mat", "dims", "0..x.ndim"),
    (lambda: knetcnn.mat(np.zeros(())), "mat", "dims", "pass dims=0"),  # 0-d: the default dims is -1
    # Ints past 64 bits, which the core cannot take: a ValueError here, not pybind11's signature list.
    (lambda: knetcnn.conv4(W, X, padding=2**64), "conv4", "padding", "does not fit in 64 bits"),
    (lambda: knetcnn.conv4(W, X, mode=-(2**64)), "conv4", "mode", "does not fit in 64 bits"),
    (lambda: knetcnn.conv4(W, X, group=2**63), "conv4", "group", "does not fit in 64 bits"),
    (lambda: knetcnn.pool(z(1, 1, 6), stride=np.uint64(2**64 - 1)), "pool", "stride", "does not fit in 64 bits"),
    (lambda: knetcnn.pool(z(1, 1, 6), window=(2**70,)), "pool", "window", "does not fit in 64 bits"),
    (lambda: knetcnn.mat(z(2, 3), dims=2**64), "mat", "dims", "does not fit in 64 bits"),
    (lambda: knetcnn.pool(z(1, 1, 6), alpha=2**1100), "pool", "alpha", "finite"),  # past float: not OverflowError
    (lambda: knetcnn.conv4(W, X, alpha=-(2**1100)), "conv4", "alpha", "finite"),
]


@pytest.mark.parametrize("call,function,argument,rule", VALUE_ERRORS, ids=[f"{c[1]}-{c[2]}-{i}" for i, c in enumerate(VALUE_ERRORS)])
def test_value_errors_name_function_argument_and_rule(call, function, argument, rule):
    with pytest.raises(ValueError) as e:
        call()
    message = str(e.value)
    assert message.startswith(f"{function}: "), message
    assert argument in message.split(":")[1], message  # "conv4: padding=-1: ..." names the argument
    assert rule in message, message


TYPE_ERRORS = [
    (lambda: knetcnn.conv4(W.astype(np.int64), X.astype(np.int64)), "conv4", ["w has dtype int64", "x has dtype int64"]),
    (lambda: knetcnn.conv4(W.astype(np.complex128), X.astype(np.complex128)), "conv4", ["complex128"]),
    (lambda: knetcnn.pool(np.zeros((1, 1, 4), dtype=bool)), "pool", ["x has dtype bool"]),
    (lambda: knetcnn.pool(np.zeros((1, 1, 4), dtype=object)), "pool", ["x has dtype object"]),
    (lambda: knetcnn.conv4(W.astype(np.float32), X), "conv4", ["w has dtype float32", "x has dtype float64", "share one dtype"]),
    (lambda: knetcnn.conv4x(W, X, z(1, 2, 5, dtype=np.float16)), "conv4x", ["dy has dtype float16", "share one dtype"]),
    (lambda: knetcnn.poolx(z(1, 1, 4), z(1, 1, 2, dtype=np.float32), z(1, 1, 2)), "poolx", ["y has dtype float32"]),
    (lambda: knetcnn.conv4(W.tolist(), X), "conv4", ["w is a list", "np.asarray(w"]),
    (lambda: knetcnn.pool(((1.0, 2.0),)), "pool", ["x is a tuple", "np.asarray(x"]),
    (lambda: knetcnn.pool(3.0), "pool", ["x is a float"]),
    (lambda: knetcnn.pool(np.float64(3.0)), "pool", ["x is a numpy.float64"]),
    (lambda: knetcnn.mat([[1.0]]), "mat", ["x is a list"]),
    (lambda: knetcnn.conv4(W, X, padding=True), "conv4", ["padding=True", "int"]),
    (lambda: knetcnn.conv4(W, X, stride=1.5), "conv4", ["stride=1.5", "int"]),
    (lambda: knetcnn.conv4(W, X, dilation=(1.0,)), "conv4", ["dilation=(1.0,)"]),
    (lambda: knetcnn.conv4(W, X, mode=0.0), "conv4", ["mode=0.0"]),
    (lambda: knetcnn.conv4(W, X, group=True), "conv4", ["group=True"]),
    (lambda: knetcnn.conv4(W, X, alpha="2"), "conv4", ["alpha='2'", "real number"]),
    (lambda: knetcnn.conv4(W, X, alpha=True), "conv4", ["alpha=True"]),
    (lambda: knetcnn.conv4(W, X, alpha=1j), "conv4", ["alpha=1j"]),
    (lambda: knetcnn.deconv4(DW, DX, output_padding=0.5), "deconv4", ["output_padding=0.5"]),
    # None once switched deconv4 to conv4's geometry: a NumPy error, or silently wrong shapes
    (lambda: knetcnn.deconv4(DW, DX, stride=2, output_padding=None), "deconv4", ["output_padding=None"]),
    (lambda: knetcnn.deconv4x(DW, DX, DX, output_padding=None), "deconv4x", ["output_padding=None"]),
    (lambda: knetcnn.deconv4w(DW, DX, DX, output_padding=None), "deconv4w", ["output_padding=None"]),
    (lambda: knetcnn.pool(z(1, 1, 4), window=None), "pool", ["window=None"]),
    (lambda: knetcnn.pool(z(1, 1, 4), maxpoolingNanOpt=False), "pool", ["maxpoolingNanOpt=False"]),
    (lambda: knetcnn.pool(z(1, 1, 4), padding="1"), "pool", ["padding='1'"]),
    (lambda: knetcnn.unpool(z(1, 1, 4), stride=2.0), "unpool", ["stride=2.0"]),
    (lambda: knetcnn.mat(z(2, 3), dims=True), "mat", ["dims=True"]),
    # None for a gradient call's dy or y: refused as an array argument, not taken for a forward call.
    (lambda: knetcnn.conv4x(W, X, None), "conv4x", ["dy is a NoneType"]),
    (lambda: knetcnn.conv4w(W, X, None), "conv4w", ["dy is a NoneType"]),
    (lambda: knetcnn.deconv4x(DW, DX, None), "deconv4x", ["dy is a NoneType"]),
    (lambda: knetcnn.deconv4w(DW, DX, None), "deconv4w", ["dy is a NoneType"]),
    (lambda: knetcnn.poolx(z(1, 1, 4), None, z(1, 1, 2)), "poolx", ["y is a NoneType"]),
    (lambda: knetcnn.unpoolx(z(1, 1, 2), z(1, 1, 4), None), "unpoolx", ["dy is a NoneType"]),
    # A mask says which cells hold no value; read as a plain array it would be dropped.
    (lambda: knetcnn.pool(np.ma.masked_array(z(1, 1, 4), mask=[[[1, 0, 0, 0]]])), "pool", ["MaskedArray", "filled"]),
    (lambda: knetcnn.conv4(W, np.ma.masked_array(X)), "conv4", ["x is a numpy.ma.MaskedArray"]),
    # A dict iterates over its keys and a set in no order: neither says which value is which axis.
    (lambda: knetcnn.conv4(W, X, padding={0: 1}), "conv4", ["padding={0: 1}", "not dict"]),
    (lambda: knetcnn.pool(z(1, 1, 4), window={2}), "pool", ["window={2}", "not set"]),
]


@pytest.mark.parametrize("call,function,fragments", TYPE_ERRORS, ids=[f"{c[1]}-{i}" for i, c in enumerate(TYPE_ERRORS)])
def test_type_errors_name_function_and_arguments(call, function, fragments):
    with pytest.raises(TypeError) as e:
        call()
    message = str(e.value)
    assert message.startswith(f"{function}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_bfloat16_host_arrays_are_refused_with_a_reason():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.zeros((1, 1, 4), dtype=ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match=r"pool: x has dtype bfloat16: .*bfloat16 only for device arrays"):
        knetcnn.pool(x)


def test_keyword_only_arguments():
    with pytest.raises(TypeError):
        knetcnn.conv4(W, X, 1)  # padding must be named, as in Knet
    with pytest.raises(TypeError):
        knetcnn.pool(z(1, 1, 4), 2)
