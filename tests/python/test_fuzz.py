"""Property-based fuzzing of every public function (hypothesis).

Random shapes, keyword values (valid and invalid: negative, zero, huge, wrong length, floats,
None, bools, NumPy integers, strings), dtypes (valid, integer, complex, bool, object), ranks,
non-contiguous and zero-size arrays, NaN/Inf data. Every call must either match the loop
reference or raise ValueError/TypeError whose message starts with the function's name and names
the offending argument; any other exception (or a crash) fails.

`make test` runs the bounded profile ("ci"); `make fuzz` runs the long one
(HYPOTHESIS_PROFILE=long). Counts of cases run and refused are printed at the end of the run.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import knetcnn
import reference
from cases import assert_close, finite_max

settings.register_profile("ci", max_examples=250, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CONV_OPS = ("conv4", "conv4w", "conv4x", "deconv4", "deconv4w", "deconv4x")
POOL_OPS = ("pool", "poolx", "unpool", "unpoolx")
ARGUMENT_NAMES = ("w", "x", "y", "dy", "padding", "stride", "dilation", "window", "mode", "group", "alpha",
                  "maxpoolingNanOpt", "output_padding", "dims", "dtype")
STATS = collections.Counter()

# ---- strategies ----------------------------------------------------------------------------------

small_int = st.integers(0, 3)
bad_scalar = st.one_of(st.integers(-3, -1), st.just(2**40), st.floats(allow_nan=True), st.none(), st.booleans(),
                       st.text(max_size=2), st.just(np.int64(2)), st.just(np.float32(1.0)))


def sometimes(bad, good, one_in: int = 10):
    """`good` most of the time, `bad` about one draw in `one_in` (hypothesis' one_of is not weighted)."""
    return st.sampled_from(range(one_in)).flatmap(lambda i: bad if i == one_in - 1 else good)


def rarely_bad(good):
    return sometimes(bad_scalar, good)


def axis_value(lo: int, hi: int):
    """A keyword value: mostly a valid int or per-axis tuple, sometimes something invalid."""
    good = st.one_of(st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=1, max_size=3).map(tuple),
                     st.integers(lo, hi).map(np.int32))
    bad = st.one_of(bad_scalar, st.lists(st.one_of(st.integers(-1, hi), st.floats(0, 2)), max_size=4),
                    st.just(np.array([[1, 2]])))
    return sometimes(bad, good)


dtypes = sometimes(st.sampled_from([np.int32, np.complex64, np.bool_, object]),
                   st.sampled_from([np.float16, np.float32, np.float64]))


@st.composite
def arrays(draw, shape, dtype, nonfinite=True):
    """An array of `shape`: normal data, maybe NaN/Inf, maybe a non-contiguous view.

    Weights stay finite (`nonfinite=False`): with a NaN weight, zero padding gives NaN*0 = NaN,
    which the loop reference (it skips padded terms) does not model, and neither does the spec.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = int(np.prod(shape)) if shape else 1
    if dtype is object:
        return np.empty(shape, dtype=object)
    data = ((rng.permutation(size) - size // 2) * 0.5).reshape(shape) if size else np.zeros(shape)
    if draw(st.booleans()) and size:
        data = data + rng.standard_normal(shape)
    if nonfinite and draw(st.integers(0, 5)) == 0 and size:
        flat = data.reshape(-1)
        flat[rng.integers(0, size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with np.errstate(invalid="ignore"):  # NaN/Inf cast to an integer dtype: the call must refuse it anyway
        a = np.asarray(data).astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "reversed", "strided", "fortran"]))
    if layout == "reversed" and a.ndim:
        a = a[..., ::-1].copy()[..., ::-1]  # same values, negative last-axis stride
    elif layout == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        a = big[..., ::2]
    elif layout == "fortran":
        a = np.asfortranarray(a)
    return a


def shape_for(draw, ndim_choices=(3,) * 6 + (4,) * 6 + (5,) * 3 + (2, 6), sizes=st.integers(1, 5)):
    ndim = draw(st.sampled_from(ndim_choices))
    shape = [draw(sizes) for _ in range(ndim)]
    if draw(st.integers(0, 20)) == 0 and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = 0  # zero-size
    return tuple(shape)


@st.composite
def conv_calls(draw):
    op = draw(st.sampled_from(CONV_OPS))
    x_shape = shape_for(draw)
    d = max(len(x_shape) - 2, 1)
    group = draw(rarely_bad(st.sampled_from([1, 1, 1, 2, 3])))
    c = x_shape[1] if len(x_shape) > 1 else 1
    g = group if isinstance(group, int) and not isinstance(group, bool) and 1 <= group <= 4 else 1
    if op.startswith("deconv"):
        w_shape = (c, draw(st.integers(1, 3))) + tuple(draw(st.integers(1, 3)) for _ in range(d))
    else:
        w_shape = (g * draw(st.integers(1, 3)), max(c // g, 1)) + tuple(draw(st.integers(1, 3)) for _ in range(d))
    if draw(st.integers(0, 10)) == 0:
        w_shape = shape_for(draw)  # anything at all
    kw = dict(padding=draw(axis_value(0, 2)), stride=draw(axis_value(1, 3)), dilation=draw(axis_value(1, 2)),
              mode=draw(rarely_bad(st.sampled_from([0, 1]))),
              alpha=draw(rarely_bad(st.sampled_from([1, 1.0, 0.5, -2, np.float32(2)]))), group=group)
    if op.startswith("deconv") and draw(st.booleans()):
        kw["output_padding"] = draw(axis_value(0, 1))
    kw = {k: v for k, v in kw.items() if draw(st.integers(0, 3)) or k in ("group",)}  # defaults too
    dtype = draw(dtypes)
    mixed = draw(st.integers(0, 15)) == 0
    w = draw(arrays(w_shape, dtype, nonfinite=False))
    # deconv4w multiplies x by deconv4's zero-padded dy: NaN*0 again (see `arrays`)
    x = draw(arrays(x_shape, np.float64 if mixed and dtype is not np.float64 else dtype, nonfinite=op != "deconv4w"))
    return op, w, x, kw, dtype


@st.composite
def pool_calls(draw):
    op = draw(st.sampled_from(POOL_OPS))
    x_shape = shape_for(draw)
    kw = dict(window=draw(axis_value(1, 3)), padding=draw(axis_value(0, 1)),
              stride=draw(st.one_of(st.none(), axis_value(1, 3))),
              mode=draw(rarely_bad(st.sampled_from([0, 1, 2, 3]))),
              alpha=draw(rarely_bad(st.sampled_from([1, 0.5, -3.0]))))
    if op.startswith("pool"):
        kw["maxpoolingNanOpt"] = draw(rarely_bad(st.sampled_from([0, 1])))
    kw = {k: v for k, v in kw.items() if draw(st.integers(0, 3))}
    dtype = draw(dtypes)
    return op, draw(arrays(x_shape, dtype)), kw, dtype


# ---- checking ------------------------------------------------------------------------------------


def check_refusal(op: str, error: Exception) -> None:
    """A refusal must be a ValueError/TypeError that names the function and an argument."""
    assert isinstance(error, (ValueError, TypeError)), f"{op} raised {type(error).__name__}: {error}"
    message = str(error)
    assert message.startswith(f"{op}:"), f"{op}: message does not name the function: {message}"
    assert any(name in message for name in ARGUMENT_NAMES), f"{op}: message names no argument: {message}"
    STATS[f"{op} refused"] += 1
    if os.environ.get("FUZZ_DEBUG"):
        print("REFUSED", message[:150])


def call(op, *args, **kw):
    try:
        return getattr(knetcnn, op)(*args, **kw), None
    except Exception as error:  # noqa: BLE001 - classified by check_refusal
        return None, error


@given(conv_calls(), st.integers(0, 2**32 - 1))
def test_conv_family_matches_reference_or_refuses_cleanly(case, seed):
    op, w, x, kw, dtype = case
    forward = "deconv4" if op.startswith("deconv") else "conv4"
    if op == forward:
        out, error = call(op, w, x, **kw)
        if error is not None:
            return check_refusal(op, error)
        ref, mag = getattr(reference, op)(w, x, magnitude=True, **kw)
    else:
        y, error = call(forward, w, x, **kw)
        if error is not None:
            return check_refusal(forward, error)
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
        out, error = call(op, w, x, dy, **kw)
        assert error is None, f"{op} refused what {forward} accepted: {error}"
        ref, mag = getattr(reference, op)(w, x, dy, magnitude=True, **kw)
    assert_close(out, ref, mag, dtype, f"{op} {w.shape} {x.shape} {kw}")
    STATS[f"{op} matched"] += 1


@given(pool_calls(), st.integers(0, 2**32 - 1))
def test_pool_family_matches_reference_or_refuses_cleanly(case, seed):
    op, x, kw, dtype = case
    forward = "unpool" if op.startswith("unpool") else "pool"
    y, error = call(forward, x, **kw)
    if error is not None:
        return check_refusal(forward, error)
    ref_kw = dict(kw, dtype=dtype) if forward == "pool" else kw
    if op == forward:
        out, ref = y, getattr(reference, op)(x, **ref_kw)
        scale_ref = getattr(reference, op)(np.abs(np.nan_to_num(x.astype(np.float64), posinf=0, neginf=0)),
                                           **dict(ref_kw, alpha=abs(float(kw.get("alpha", 1)))))
    else:
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
        out, error = call(op, x, y, dy, **kw)
        assert error is None, f"{op} refused what {forward} accepted: {error}"
        ref = getattr(reference, op)(x, y, dy, **ref_kw)
        scale_ref = getattr(reference, op)(x, y, np.abs(dy.astype(np.float64)), **dict(ref_kw, alpha=abs(float(kw.get("alpha", 1)))))
    scale = np.abs(np.nan_to_num(np.asarray(scale_ref, np.float64), nan=0, posinf=0, neginf=0)) + finite_max(x) * 0
    assert_close(out, ref, scale, dtype, f"{op} {x.shape} {kw}", terms=64)
    STATS[f"{op} matched"] += 1


@given(st.data())
def test_mat_matches_reshape_or_refuses_cleanly(data):
    x = data.draw(arrays(shape_for(data.draw, (1, 2, 3, 4, 5)), np.float32))
    dims = data.draw(sometimes(bad_scalar, st.one_of(st.none(), st.integers(-1, 6))))
    out, error = call("mat", x) if dims is None else call("mat", x, dims)
    if error is not None:
        return check_refusal("mat", error)
    np.testing.assert_array_equal(out, reference.mat(x, dims))
    STATS["mat matched"] += 1


@given(st.sampled_from(CONV_OPS + POOL_OPS + ("mat",)),
       st.one_of(st.lists(st.floats(), max_size=4), st.floats(), st.none(), st.text(max_size=3), st.integers()))
def test_non_arrays_are_refused_with_a_type_error(op, thing):
    n_args = {"conv4": 2, "deconv4": 2, "pool": 1, "unpool": 1, "mat": 1}.get(op, 3)
    args = [thing] * n_args
    _, error = call(op, *args)
    assert isinstance(error, TypeError), f"{op}({thing!r}) raised {error!r}"
    assert str(error).startswith(f"{op}:")
    STATS[f"{op} refused"] += 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    matched = sum(v for k, v in STATS.items() if k.endswith("matched"))
    refused = sum(v for k, v in STATS.items() if k.endswith("refused"))
    print(f"\nfuzz ({os.environ.get('HYPOTHESIS_PROFILE', 'ci')} profile): {matched + refused} calls, "
          f"{matched} matched the reference, {refused} refused cleanly")
