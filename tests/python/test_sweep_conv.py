"""conv4, conv4w, conv4x against the loop reference: 500 seeded random configurations over
1-3 spatial axes, both modes, groups, dilation, stride, padding, alpha and every dtype."""

import numpy as np
import pytest

from cases import check_family_against_reference, conv_config

CONFIGS = 500
BATCHES = 10


@pytest.mark.parametrize("batch", range(BATCHES))
def test_conv_family_matches_reference(batch):
    rng = np.random.default_rng([31, batch])
    for _ in range(CONFIGS // BATCHES):
        check_family_against_reference("conv4", rng, conv_config(rng))
