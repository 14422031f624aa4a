"""Every example is smoke-tested: it runs, and what it prints shows it did its job."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spec_vectors import VECTORS

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_quickstart_prints_the_cudnn_descriptors():
    out = run("examples/quickstart.py")
    assert out.returncode == 0, out.stderr
    assert "[1, 1, 1, 7]" in out.stdout and "padding': [0, 1]" in out.stdout


def test_lenet_digits_short_run_learns(tmp_path):
    out = run("examples/lenet_digits.py", "--epochs", "2", "--train-limit", "600", "--no-progress", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    final, before = map(float, re.search(r"test accuracy ([\d.]+) \(before training ([\d.]+)\)", out.stdout).groups())
    assert final > before + 0.3, out.stdout  # two short epochs take it far above chance
    png = tmp_path / "lenet_digits.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert "running on CPU" in out.stdout


def test_lenet_digits_gpu_flag_explains_itself_without_a_gpu():
    from tests_gpu_reason import GPU_REASON

    if not GPU_REASON:
        pytest.skip("a GPU is usable here: the GPU run is covered by the gpu tier")
    out = run("examples/lenet_digits.py", "--device", "gpu", "--epochs", "1")
    assert out.returncode != 0
    assert "no GPU is usable here" in out.stderr and GPU_REASON in out.stderr


def test_knet_manual_examples_all_match():
    out = run("examples/knet_manual.py", str(VECTORS))
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"(\d+) of (\d+) Knet manual examples match", out.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 10
    assert "Knet:    conv4(w, x; padding=1)" in out.stdout


def test_interop_example_runs_or_says_why_not():
    from tests_gpu_reason import GPU_REASON

    out = run("examples/interop.py")
    assert out.returncode == 0, out.stderr
    if GPU_REASON:
        assert "interop examples skipped: no GPU is usable here" in out.stdout and GPU_REASON in out.stdout
    else:
        assert "KnetArray chain conv4 -> pool: KnetArray" in out.stdout


def test_gpu_benchmark_says_why_it_cannot_run_here():
    from tests_gpu_reason import GPU_REASON

    if not GPU_REASON:
        pytest.skip("a GPU is usable: bench/gpu.py is a benchmark, run it by hand")
    out = run("bench/gpu.py")
    assert out.returncode == 0 and "no GPU is usable here" in out.stdout


def test_cpu_benchmark_prints_a_row_per_case_after_its_rounds():
    """bench/cpu.py on its smallest cases: every case measured in every round, then one table row
    each (with PyTorch's time and the ratio when torch is installed)."""
    args = ("--only", "lenet1", "--ops", "pool", "--ops", "poolx", "--rounds", "2", "--reps", "1", "--max-wait", "0")
    out = run("bench/cpu.py", *args)
    assert out.returncode == 0, out.stderr
    assert "round 1/2 done" in out.stderr and "round 2/2 done" in out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("lenet1")]
    assert [(r[1], r[2]) for r in rows] == [(d, op) for d in ("float64", "float32") for op in ("pool", "poolx")]
    assert all(float(r[3]) >= 0 for r in rows)
    if "PyTorch not installed" not in out.stdout:
        assert all(r[6] in ("met", "MISSED") for r in rows) and "targets missed:" in out.stdout
