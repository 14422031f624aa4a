"""alpha must be representable where the backends compute with it (float32 for half/float data)."""

import numpy as np
import pytest

import knetcnn


def test_alpha_beyond_float32_is_refused_for_single_precision():
    w, x = np.ones((1, 1, 1), np.float32), np.ones((1, 1, 2), np.float32)
    with pytest.raises(ValueError, match=r"conv4: alpha=3\.5e\+38: for float32 arrays alpha must be within"):
        knetcnn.conv4(w, x, alpha=3.5e38)
    # float64 data keeps double-precision scalars
    assert knetcnn.conv4(w.astype(np.float64), x.astype(np.float64), alpha=3.5e38)[0, 0, 0] == 3.5e38
    np.testing.assert_allclose(knetcnn.conv4(w, x, alpha=3.4e38), 3.4e38, rtol=1e-6)


def test_alpha_that_rounds_to_zero_in_float32_is_refused_for_half_and_single_precision():
    """Found by `make fuzz`: float16 inf pooled with alpha=6.3e-65 gave NaN (alpha became 0 in
    float32, and inf * 0 is NaN) where the formula gives inf."""
    x = np.full((1, 1, 1), np.inf, np.float16)
    with pytest.raises(ValueError, match=r"pool: alpha=6\.3e-65: for float16 arrays alpha must be within .* unless 0"):
        knetcnn.pool(x, window=1, alpha=6.3e-65)
    # the smallest float32 subnormal is still accepted, zero too, and float64 data keeps its range
    assert knetcnn.pool(x.astype(np.float32), window=1, alpha=1.4e-45)[0, 0, 0] == np.inf
    assert knetcnn.pool(np.ones((1, 1, 1), np.float32), window=1, alpha=0)[0, 0, 0] == 0
    assert knetcnn.pool(x.astype(np.float64), window=1, alpha=6.3e-65)[0, 0, 0] == np.inf


def test_unpool_checks_one_over_alpha_too():
    x = np.ones((1, 1, 2), np.float16)
    with pytest.raises(ValueError, match=r"unpool: alpha=1e-40: .* alpha and 1/alpha must be within"):
        knetcnn.unpool(x, alpha=1e-40)
    with pytest.raises(ValueError, match="alpha must be non-zero"):
        knetcnn.unpool(x, alpha=0)
    with pytest.raises(ValueError, match="finite"):
        knetcnn.pool(x, alpha=float("nan"))


def test_an_accepted_alpha_is_still_checked_under_other_rules():
    """Accepted int and float alphas are remembered (a training loop repeats them): one accepted
    for float64 data, or where zero is allowed, must still be refused where the rules differ."""
    x64 = np.ones((1, 1, 4), np.float64)
    assert knetcnn.pool(x64, alpha=3.5e38)[0, 0, 0] == 3.5e38
    with pytest.raises(ValueError, match=r"pool: alpha=3\.5e\+38: for float32 arrays alpha must be within"):
        knetcnn.pool(x64.astype(np.float32), alpha=3.5e38)
    assert knetcnn.pool(x64, alpha=0)[0, 0, 0] == 0
    with pytest.raises(ValueError, match="unpool: alpha=0: alpha must be non-zero"):
        knetcnn.unpool(x64, alpha=0)
    with pytest.raises(TypeError, match="alpha=True: alpha must be a real number, not bool"):
        knetcnn.pool(x64, alpha=True)  # True == 1, which was accepted above: bools are still refused
    assert knetcnn.pool(x64, alpha=2)[0, 0, 0] == knetcnn.pool(x64, alpha=2.0)[0, 0, 0] == 2
