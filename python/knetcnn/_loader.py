"""Loads the compiled core, making sure it finds cuDNN and the CUDA runtime from the wheels.

The module's RPATH points at ``site-packages/nvidia/{cudnn,cuda_runtime}/lib``. Where that does not
resolve (an unusual install layout, a build tree), the libraries are preloaded from the wheels'
package paths. ``nvidia.cudnn`` is a namespace package, so its location comes from ``__path__``,
not ``__file__``.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import warnings

# (namespace package, library file): loaded in this order, since cuDNN needs the CUDA runtime.
_WHEEL_LIBRARIES = (
    ("nvidia.cuda_runtime", "libcudart.so.12"),
    ("nvidia.cublas", "libcublasLt.so.12"),
    ("nvidia.cublas", "libcublas.so.12"),
    ("nvidia.cudnn", "libcudnn.so.9"),
)


def _preload_wheel_libraries() -> list[str]:
    """dlopen the wheels' libraries with RTLD_GLOBAL; returns what could not be loaded and why."""
    problems = []
    for package, name in _WHEEL_LIBRARIES:
        try:
            paths = list(importlib.import_module(package).__path__)
        except ImportError as error:
            problems.append(f"{package} is not installed ({error})")
            continue
        candidates = [os.path.join(p, "lib", name) for p in paths]
        found = [c for c in candidates if os.path.exists(c)]
        if not found:
            problems.append(f"{name} is not in {candidates}")
            continue
        try:
            ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            problems.append(f"{found[0]} failed to load: {error}")
    return problems


def load_core():
    """Imports ``knetcnn._knetcnn``, preloading the wheels' libraries if the RPATH did not work."""
    try:
        from . import _knetcnn
    except ImportError as first_error:
        problems = _preload_wheel_libraries()
        try:
            from . import _knetcnn
        except ImportError as error:
            raise ImportError(
                "knetcnn could not load its compiled core: "
                f"{error} (first attempt: {first_error}). "
                + (f"Problems preloading the wheels' libraries: {'; '.join(problems)}. " if problems else "")
                + "Install the CUDA 12 wheels it needs: "
                "pip install 'nvidia-cudnn-cu12>=9,<10' 'nvidia-cuda-runtime-cu12>=12,<13'"
            ) from error
    _check_cudnn_version(_knetcnn.runtime_info())
    return _knetcnn


def cudnn_version_string(version: int) -> str:
    """cuDNN 9 encodes versions as major*10000 + minor*100 + patch."""
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}"


def _check_cudnn_version(info: dict) -> None:
    runtime, build = info["cudnn_runtime_version"], info["cudnn_build_version"]
    if runtime // 10000 != build // 10000:
        raise ImportError(
            f"knetcnn was built against cuDNN {cudnn_version_string(build)} but loaded cuDNN "
            f"{cudnn_version_string(runtime)}: the major versions must match. Reinstall knetcnn "
            "(pip install --force-reinstall --no-deps knetcnn) or install nvidia-cudnn-cu12 "
            f"{build // 10000}.x."
        )
    if runtime < build:
        warnings.warn(
            f"knetcnn was built against cuDNN {cudnn_version_string(build)} but runs with the older "
            f"{cudnn_version_string(runtime)}; upgrade nvidia-cudnn-cu12 if calls fail.",
            RuntimeWarning,
            stacklevel=3,
        )
