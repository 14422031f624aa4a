"""deconv4, deconv4w, deconv4x against the loop reference: 500 seeded random configurations,
including output_padding up to max(stride, dilation) - 1."""

import numpy as np
import pytest

from cases import check_family_against_reference, deconv_config

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("batch", range(BATCHES))
def test_deconv_family_matches_reference(batch):
    rng = np.random.default_rng([37, batch])
    for _ in range(CONFIGS // BATCHES):
        check_family_against_reference("deconv4", rng, deconv_config(rng))
