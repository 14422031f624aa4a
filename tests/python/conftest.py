"""Test tiers: everything runs here except tests marked `gpu`, which need a usable NVIDIA GPU and
are skipped, with the reason, where there is none."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (reference, tests_gpu_reason) import by name

import knetcnn  # noqa: E402
from tests_gpu_reason import GPU_REASON as GPU_UNAVAILABLE_REASON  # noqa: E402
from fake_cuda import cuda  # noqa: E402,F401  (the `cuda` fixture: a simulated CUDA runtime)


def pytest_collection_modifyitems(config, items):
    if not GPU_UNAVAILABLE_REASON:
        return
    skip = pytest.mark.skip(reason=f"gpu tier: no usable GPU ({GPU_UNAVAILABLE_REASON})")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"knetcnn {knetcnn.__version__}; gpu tier: " + (
        "enabled" if not GPU_UNAVAILABLE_REASON else f"skipped ({GPU_UNAVAILABLE_REASON})"
    )
