"""Moving test data onto a GPU in each supported array library, and back (gpu tier only)."""

from __future__ import annotations

import numpy as np
import pytest

import knetcnn

LIBRARIES = ("knetarray", "cupy", "torch")


def library(name: str):
    """The module for `name` (skipping the test when it is not installed or has no GPU)."""
    if name == "knetarray":
        return knetcnn
    if name == "cupy":
        return pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    return torch


def to_device(name: str, a: np.ndarray):
    lib = library(name)
    if name == "knetarray":
        return knetcnn.KnetArray(a)
    if name == "cupy":
        return lib.asarray(a)
    return lib.as_tensor(a, device="cuda")


def to_host(name: str, r) -> np.ndarray:
    if name == "knetarray":
        return r.get()
    if name == "cupy":
        return r.get()
    return r.detach().cpu().numpy()


def expected_type(name: str):
    if name == "knetarray":
        return knetcnn.KnetArray
    if name == "cupy":
        return library("cupy").ndarray
    return library("torch").Tensor
