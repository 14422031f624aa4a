"""deconv4, deconv4w, deconv4x against the loop reference: 500 seeded random configurations,
including output_padding up to max(stride, dilation) - 1; each through each CPU implementation."""

import numpy as np
import pytest

from cases import CONV_PATHS, check_family_against_reference, deconv_config, force_conv_path

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("path", CONV_PATHS)
@pytest.mark.parametrize("batch", range(BATCHES))
def test_deconv_family_matches_reference(monkeypatch, batch, path):
    force_conv_path(monkeypatch, path)
    rng = np.random.default_rng([37, batch])
    for _ in range(CONFIGS // BATCHES):
        check_family_against_reference("deconv4", rng, deconv_config(rng), elementwise=path != "winograd")
