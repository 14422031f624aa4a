"""conv4, conv4w, conv4x against the loop reference: 500 seeded random configurations over
1-3 spatial axes, both modes, groups, dilation, stride, padding, alpha and every dtype."""

import numpy as np
import pytest

import knetcnn
import reference
from cases import assert_close, conv_config, normal

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("batch", range(BATCHES))
def test_conv_family_matches_reference(batch):
    rng = np.random.default_rng([31, batch])
    for _ in range(CONFIGS // BATCHES):
        cfg = conv_config(rng)
        dtype, kw = cfg["dtype"], cfg["kwargs"]
        w, x = normal(rng, cfg["w"], dtype), normal(rng, cfg["x"], dtype)
        what = f"{cfg}"

        ref, mag = reference.conv4(w, x, magnitude=True, **kw)
        assert_close(knetcnn.conv4(w, x, **kw), ref, mag, dtype, "conv4 " + what)

        dy = normal(rng, ref.shape, dtype)
        ref, mag = reference.conv4x(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4x(w, x, dy, **kw), ref, mag, dtype, "conv4x " + what)
        ref, mag = reference.conv4w(w, x, dy, magnitude=True, **kw)
        assert_close(knetcnn.conv4w(w, x, dy, **kw), ref, mag, dtype, "conv4w " + what)
