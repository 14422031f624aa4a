"""The golden cases of shared/spec/vectors.json, in every dtype, on the CPU backend."""

import json
from pathlib import Path

import numpy as np
import pytest

import knetcnn

# tests/python/ -> the repository -> its parent, which holds shared/ (CI clones beside it).
VECTORS = Path(__file__).resolve().parents[3] / "shared/spec/vectors.json"


def test_vectors_file_exists():
    assert VECTORS.is_file(), f"golden vectors missing: {VECTORS} (shared/ must sit beside the repository)"


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
