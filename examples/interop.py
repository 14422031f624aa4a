"""knetcnn with other GPU array libraries: CuPy and PyTorch arrays in and out, and a conv4 -> pool
chain on KnetArray with one copy to the device and one back.

    python examples/interop.py

Needs an NVIDIA GPU; elsewhere it says why and exits 0. CuPy and PyTorch parts run when those
libraries are installed.
"""

from __future__ import annotations

import sys

import numpy as np

import knetcnn


def knetarray_chain(rng):
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    kx, kw = knetcnn.KnetArray(x), knetcnn.KnetArray(w)  # the one copy in (each array)
    ky = knetcnn.pool(knetcnn.conv4(kw, kx, padding=1), window=2)  # stays on the GPU
    y = ky.get()  # the one copy out
    expected = knetcnn.pool(knetcnn.conv4(w, x, padding=1), window=2)
    print(f"KnetArray chain conv4 -> pool: {type(ky).__name__} {ky.shape}, "
          f"max |GPU - CPU| = {np.abs(y - expected).max():.2e}")


def cupy_in_and_out(rng):
    try:
        import cupy
    except ImportError:
        print("CuPy: not installed (pip install cupy-cuda12x), skipped")
        return
    x = cupy.asarray(rng.standard_normal((4, 8, 16, 16)).astype(np.float32))
    w = cupy.asarray(rng.standard_normal((8, 8, 3, 3)).astype(np.float32))
    y = knetcnn.conv4(w, x, padding=1, mode=1)
    dw = knetcnn.conv4w(w, x, cupy.ones_like(y), padding=1, mode=1)
    print(f"CuPy: conv4 -> {type(y).__module__}.{type(y).__name__} {y.shape}; conv4w -> {dw.shape}")


def torch_in_and_out(rng):
    try:
        import torch
    except ImportError:
        print("PyTorch: not installed, skipped")
        return
    if not torch.cuda.is_available():
        print("PyTorch: no CUDA build, skipped")
        return
    x = torch.randn(4, 8, 16, 16, device="cuda")
    w = torch.randn(8, 8, 3, 3, device="cuda")
    y = knetcnn.conv4(w, x, padding=1, mode=1)  # mode=1: cross-correlation, like conv2d
    reference = torch.nn.functional.conv2d(x, w, padding=1)
    print(f"PyTorch: conv4 -> {type(y).__module__}.{type(y).__name__} {tuple(y.shape)}, "
          f"max |knetcnn - conv2d| = {(y - reference).abs().max().item():.2e}")


def main() -> int:
    reason = knetcnn.info()["no_device_reason"]
    if reason:
        print(f"interop examples skipped: no GPU is usable here ({reason})")
        return 0
    rng = np.random.default_rng(0)
    knetarray_chain(rng)
    cupy_in_and_out(rng)
    torch_in_and_out(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
