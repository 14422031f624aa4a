"""The golden cases of the spec's vectors.json (see spec_vectors), in every dtype, on the CPU backend."""

import json

import numpy as np
import pytest

import knetcnn

from spec_vectors import COPY, LIVE, VECTORS


def test_vectors_file_exists():
    assert VECTORS.is_file(), f"golden vectors missing: {VECTORS}"


@pytest.mark.skipif(not LIVE.is_file(), reason=f"no live spec beside the repository ({LIVE}): the copy is used")
def test_repository_copy_equals_the_live_spec():
    assert COPY.read_bytes() == LIVE.read_bytes(), f"{COPY} is stale: copy {LIVE} over it"


def _cases():
    if not VECTORS.is_file():
        return []
    return json.loads(VECTORS.read_text())["cases"]


CASES = _cases()


def test_vectors_cover_every_forward_op():
    assert {c["op"] for c in CASES} >= {"conv4", "conv4w", "conv4x", "deconv4", "pool", "poolx", "unpool"}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"{c['op']}: {c['source']}" for c in CASES])
def test_vector(case, dtype):
    args = [np.asarray(a["data"], dtype=dtype).reshape(a["shape"]) for a in case["args"].values()]
    result = getattr(knetcnn, case["op"])(*args, **case["kwargs"])
    expect = np.asarray(case["expect"]["data"], dtype=np.float64).reshape(case["expect"]["shape"])
    assert isinstance(result, np.ndarray) and result.dtype == dtype
    assert result.shape == expect.shape
    np.testing.assert_allclose(result.astype(np.float64), expect, rtol=2 * np.finfo(dtype).eps, atol=0)
