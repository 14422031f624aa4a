"""``knetcnn.info()`` and ``python -m knetcnn info``: versions, devices and usable backends."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import numpy as np

from ._core import core
from ._loader import cudnn_version_string


def _cuda_version_string(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info() -> dict[str, Any]:
    """What knetcnn sees: package and library versions, GPUs, and which backends are usable."""
    from . import __version__

    rt = core.runtime_info()
    gpu_reason = rt["no_device_reason"]
    return {
        "knetcnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cuda-python": _package_version("cuda-python"),
        "cudnn_runtime": cudnn_version_string(rt["cudnn_runtime_version"]),
        "cudnn_build": cudnn_version_string(rt["cudnn_build_version"]),
        "cuda_runtime": _cuda_version_string(rt["cuda_runtime_version"]),
        "cuda_build": _cuda_version_string(rt["cuda_build_version"]),
        "driver": _cuda_version_string(rt["driver_version"]) if rt["driver_version"] else "none",
        "devices": rt["devices"],
        "no_device_reason": gpu_reason,
        "backends": {
            "cpu": {"usable": True, "note": "NumPy arrays run on the CPU backend"},
            "cudnn": {
                "usable": not gpu_reason,
                "note": "device arrays run on cuDNN" if not gpu_reason else gpu_reason,
            },
        },
    }


def format_info(report: dict[str, Any] | None = None) -> str:
    r = report if report is not None else info()
    lines = [
        f"knetcnn {r['knetcnn']} (Python {r['python']}, NumPy {r['numpy']}, cuda-python {r['cuda-python']})",
        f"cuDNN        runtime {r['cudnn_runtime']}, built against {r['cudnn_build']}",
        f"CUDA runtime {r['cuda_runtime']}, built against {r['cuda_build']}",
        f"driver       {r['driver']}",
    ]
    if r["devices"]:
        for d in r["devices"]:
            cc = ".".join(str(c) for c in d["compute_capability"])
            lines.append(f"device {d['index']}     {d['name']}, compute capability {cc}, "
                         f"{d['total_memory'] / 2**30:.1f} GiB")
    else:
        lines.append(f"devices      none: {r['no_device_reason']}")
    for name, b in r["backends"].items():
        lines.append(f"backend {name:<6} {'usable' if b['usable'] else 'not usable'}: {b['note']}")
    return "\n".join(lines)
