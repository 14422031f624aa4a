"""Remembered host calls (knetcnn._plans): a repeated signature skips validation and gives the same
results; calls without a signature, failed calls and other layouts still take the full path."""

import numpy as np
import pytest

import knetcnn
import reference
from knetcnn import _dispatch, _plans, cpu


@pytest.fixture
def validations(monkeypatch):
    """Forgets every plan, and counts full validations (each one classifies the arrays once)."""
    _plans.forget()
    count = [0]
    real = _dispatch.classify

    def counted(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_dispatch, "classify", counted)
    yield count
    _plans.forget()


def _pool_arrays(dtype="float64", shape=(2, 3, 6, 6)):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    y = reference.pool(x).astype(dtype)  # not knetcnn.pool: that would count as a validation
    return x, y, rng.standard_normal(y.shape).astype(dtype)


# Every op of the family, as f(arrays) on host arrays of one shape family.
def _calls():
    rng = np.random.default_rng(3)
    w, x = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 3, 7, 7))
    dy = rng.standard_normal((2, 4, 5, 5))
    px, py, pdy = _pool_arrays()
    ux = rng.standard_normal((2, 3, 3, 3))
    uy = np.zeros((2, 3, 6, 6))  # unpool(ux)'s shape; unpoolx checks y's shape, never its values
    udy = rng.standard_normal(uy.shape)
    return {
        "conv4": lambda: knetcnn.conv4(w, x, mode=1, alpha=2.0),
        "conv4x": lambda: knetcnn.conv4x(w, x, dy, padding=(0, 0)),
        "conv4w": lambda: knetcnn.conv4w(w, x, dy, stride=1),
        "deconv4": lambda: knetcnn.deconv4(w, dy, alpha=-1),
        "pool": lambda: knetcnn.pool(px, window=(2, 2), mode=2),
        "poolx max": lambda: knetcnn.poolx(px, py, pdy, alpha=3),
        "poolx average": lambda: knetcnn.poolx(px, py, pdy, mode=1),
        "unpool": lambda: knetcnn.unpool(ux, alpha=0.5),
        "unpoolx": lambda: knetcnn.unpoolx(ux, uy, udy, mode=1),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_a_repeated_call_validates_once_and_gives_the_same_result(validations, name):
    call = _calls()[name]
    first = call()
    assert validations[0] == 1
    again = call()
    assert validations[0] == 1, "the second call of one signature validated again"
    np.testing.assert_array_equal(again, first)
    assert again.dtype == first.dtype and again.shape == first.shape


def test_planned_pooling_matches_the_loop_reference(validations):
    rng = np.random.default_rng(11)
    for dtype in ("float32", "float64", "float16"):
        x, _, _ = _pool_arrays(dtype)
        for kw in (dict(), dict(mode=1), dict(window=3, stride=1, padding=1, mode=2), dict(alpha=-2.0)):
            expect_y = reference.pool(x, dtype=dtype, **kw)
            dy = rng.standard_normal(expect_y.shape).astype(dtype)
            expect_dx = reference.poolx(x, expect_y, dy, dtype=dtype, **kw)
            tol = dict(rtol=1e-2, atol=1e-2) if dtype == "float16" else dict(rtol=1e-5, atol=1e-5)
            for attempt in ("full path", "plan"):
                y = knetcnn.pool(x, **kw)
                dx = knetcnn.poolx(x, y, dy, **kw)
                np.testing.assert_allclose(y, expect_y, **tol, err_msg=f"{attempt} {dtype} {kw}")
                np.testing.assert_allclose(dx, expect_dx, **tol, err_msg=f"{attempt} {dtype} {kw}")
                assert y.dtype == dx.dtype == x.dtype
    assert validations[0] == 3 * 4 * 2, "each signature validated once"


def test_a_failed_call_is_not_remembered(validations):
    x, y, dy = _pool_arrays()
    bad_dy = dy[:, :, :2]
    for _ in range(2):
        with pytest.raises(ValueError, match="dy"):
            knetcnn.poolx(x, y, bad_dy.copy())
    with pytest.raises(ValueError, match="window"):
        knetcnn.pool(x, window=7)
    with pytest.raises(ValueError, match="window"):
        knetcnn.pool(x, window=7)
    # A remembered good call does not vouch for a bad one that differs only in a gradient's shape.
    knetcnn.poolx(x, y, dy)
    knetcnn.poolx(x, y, dy)
    with pytest.raises(ValueError, match="y"):
        knetcnn.poolx(x, y[:, :, :2].copy(), dy)


@pytest.mark.parametrize(
    "spelling",
    [
        dict(window=np.int64(2)),  # equal to 2 and hashed alike, but not a plain int
        dict(window=[2, 2]),  # unhashable
        dict(alpha=np.float64(1.0)),
        dict(mode=True),  # a bool equals 1, and is refused
    ],
    ids=["numpy int", "list", "numpy float alpha", "bool"],
)
def test_calls_without_a_signature_validate_every_time(validations, spelling):
    x, _, _ = _pool_arrays()
    results = []
    for _ in range(3):
        try:
            results.append(knetcnn.pool(x, **spelling))
        except TypeError as err:
            results.append(str(err))
    assert validations[0] == 3
    assert all(type(r) is type(results[0]) for r in results)


def test_bools_are_refused_on_every_call(validations):
    x, _, _ = _pool_arrays()
    knetcnn.pool(x, mode=1)
    knetcnn.pool(x, mode=1)
    for _ in range(2):
        with pytest.raises(TypeError, match="mode"):
            knetcnn.pool(x, mode=True)


def test_other_arrays_take_the_full_path(validations):
    x, y, dy = _pool_arrays()
    knetcnn.pool(x)
    knetcnn.pool(x)
    assert validations[0] == 1

    class Sub(np.ndarray):
        pass

    knetcnn.pool(x.view(Sub))
    assert validations[0] == 2
    with pytest.raises(TypeError, match="dtype"):
        knetcnn.poolx(x, y.astype(np.float32), dy)
    with pytest.raises(TypeError, match="list"):
        knetcnn.pool(x.tolist())


def test_other_layouts_of_a_remembered_signature_give_the_same_results(validations):
    x, y, dy = _pool_arrays(shape=(2, 3, 8, 8))
    contiguous = knetcnn.poolx(x, y, dy)
    knetcnn.poolx(x, y, dy)
    assert validations[0] == 1
    fortran = knetcnn.poolx(np.asfortranarray(x), y, np.asfortranarray(dy))
    swapped = knetcnn.poolx(x.astype(">f8"), y.astype(">f8"), dy.astype(">f8"))
    buffer = np.empty(x.nbytes + 1, np.uint8)[1:]  # float64 data at an odd address
    misaligned = np.frombuffer(buffer, np.float64).reshape(x.shape)
    misaligned[...] = x
    assert not misaligned.flags.aligned
    unaligned = knetcnn.poolx(misaligned, y, dy)
    for got in (fortran, swapped, unaligned):
        np.testing.assert_array_equal(got, contiguous)
        assert got.dtype.isnative


def test_the_plans_stay_bounded(validations, monkeypatch):
    monkeypatch.setattr(_plans, "_PLANS_LIMIT", 3)
    x, _, _ = _pool_arrays()
    for alpha in (1.0, 2.0, 3.0, 4.0, 5.0):
        np.testing.assert_array_equal(knetcnn.pool(x, alpha=alpha), alpha * knetcnn.pool(x))
    assert len(_plans._PLANS) <= 3


def test_the_kernel_plan_and_the_general_runner_agree():
    x, y, dy = _pool_arrays(shape=(3, 2, 7, 9))
    g = knetcnn._geometry.pool("poolx", x.shape, window=3, padding=1, stride=2, mode=0, maxpoolingNanOpt=1)
    planned = cpu.planned("poolx", g, 1.5, x.dtype)
    y = knetcnn.pool(x, window=3, padding=1, stride=2)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    np.testing.assert_array_equal(planned((x, y, dy)), cpu.run("poolx", (x, y, dy), g, 1.5))
