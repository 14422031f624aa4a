"""CPU results over recycled memory (knetcnn/cpu/_results.py, csrc/core/result_memory.cpp): a
result's memory serves a later result only once the array and every view of it are gone, and a
reused block never leaks its old values into a result (dx of conv4x is accumulated into zeros)."""

import gc

import numpy as np
import pytest

import knetcnn
from knetcnn._core import core

SHAPE = (16, 8, 16, 16)  # 256 KiB in float64: above core.MIN_RECYCLED_BYTES


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_results_memory_is_reused_only_after_it_is_gone(dtype):
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)
    y = knetcnn.pool(x)
    dy = np.ones_like(y)
    first = knetcnn.poolx(x, y, dy)
    assert first.nbytes >= core.MIN_RECYCLED_BYTES
    assert first.flags.c_contiguous and first.flags.writeable and first.dtype == dtype
    expected = first.copy()
    second = knetcnn.poolx(x, y, dy)  # first is alive: other memory
    assert _address(second) != _address(first)
    view = first[1:]
    address = _address(first)
    del first
    gc.collect()
    third = knetcnn.poolx(x, y, dy)  # a view of first is alive: still other memory
    assert _address(third) != address
    third[...] = 7
    third_address = _address(third)
    np.testing.assert_array_equal(view, expected[1:])  # untouched by the later results
    del view, third
    gc.collect()
    fourth = knetcnn.poolx(x, y, dy)
    assert _address(fourth) in (address, third_address)  # a block given back, not fresh memory
    np.testing.assert_array_equal(fourth, expected)


def test_a_block_given_back_is_handed_out_again():
    a = core.result_empty(SHAPE, np.float64)
    address = _address(a)
    del a
    b = core.result_empty(SHAPE, "float64")
    assert _address(b) == address
    assert core.result_empty((0, 3), np.float32).shape == (0, 3)
    with pytest.raises(TypeError, match="result_empty: dtype must be float64 or float32"):
        core.result_empty(SHAPE, np.float16)
    with pytest.raises(ValueError, match="result_empty: negative extent in the shape"):
        core.result_empty((2, -1), np.float64)
    with pytest.raises(ValueError, match="more bytes than memory can address"):
        core.result_empty((2**40, 2**40), np.float64)
    with pytest.raises(ValueError, match="more bytes than memory can address"):
        core.result_empty((2**61 - 1,), np.float64)  # fits size_t, not NumPy's signed size


@pytest.mark.parametrize("kw", [dict(stride=2), dict(padding=1)])  # im2col's col2im, the direct kernel
def test_reused_memory_does_not_leak_old_values_into_results(kw):
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((4, 8, 3, 3)), rng.standard_normal(SHAPE)
    dy = rng.standard_normal(knetcnn.conv4(w, x, **kw).shape)
    expected = knetcnn.conv4x(w, x, dy, **kw)
    expected_y = knetcnn.conv4(w, x, **kw)
    for _ in range(3):
        garbage = [core.result_empty(a.shape, np.float64) for a in (expected, expected_y)]
        for g in garbage:
            g.fill(np.nan)
        del garbage, g
        np.testing.assert_array_equal(knetcnn.conv4x(w, x, dy, **kw), expected)
        np.testing.assert_array_equal(knetcnn.conv4(w, x, **kw), expected_y)
