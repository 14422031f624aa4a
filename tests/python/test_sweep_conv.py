"""conv4, conv4w, conv4x against the loop reference: 500 seeded random configurations over
1-3 spatial axes, both modes, groups, dilation, stride, padding, alpha and every dtype; each
through each CPU implementation (im2col + BLAS; the direct kernel and Winograd F(2x2, 3x3) where
they apply)."""

import numpy as np
import pytest

from cases import CONV_PATHS, check_family_against_reference, conv_config, force_conv_path

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("path", CONV_PATHS)
@pytest.mark.parametrize("batch", range(BATCHES))
def test_conv_family_matches_reference(monkeypatch, batch, path):
    force_conv_path(monkeypatch, path)
    rng = np.random.default_rng([31, batch])
    for _ in range(CONFIGS // BATCHES):
        check_family_against_reference("conv4", rng, conv_config(rng), elementwise=path != "winograd")
