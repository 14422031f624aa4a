"""deconv4, deconv4w, deconv4x against the loop reference: 500 seeded random configurations,
including output_padding up to max(stride, dilation) - 1."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import assert_close, deconv_config, normal

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("batch", range(BATCHES))
def test_deconv_family_matches_reference(batch):
    rng = np.random.default_rng([37, batch])
    for _ in range(CONFIGS // BATCHES):
        cfg = deconv_config(rng)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        w, x = normal(rng, cfg["w"], dtype), normal(rng, cfg["x"], dtype)
        what = f"{cfg}"

        ref, mag = reference.deconv4(w, x, magnitude=True, **kw)
        assert_close(knetcnn.deconv4(w, x, **kw), ref, mag, dtype, "deconv4 " + what)

        dy = normal(rng, ref.shape, dtype)
        ref, mag = reference.deconv4x(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.deconv4x(w, x, dy, **kw), ref, mag, dtype, "deconv4x " + what)
        ref, mag = reference.deconv4w(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.deconv4w(w, x, dy, **kw), ref, mag, dtype, "deconv4w " + what)
