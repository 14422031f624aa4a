"""CPU benchmark: knetcnn's NumPy backend against PyTorch CPU, measured in the same run.

Times conv4, conv4x, conv4w, pool and poolx on LeNet, VGG, ResNet and AlexNet-stem shapes in
float32 and float64 (median of several repetitions) and prints ours/torch ratios. conv4 runs
with mode=1, PyTorch's cross-correlation; conv4x is compared with torch.nn.grad.conv2d_input,
conv4w with conv2d_weight; pool is a 2x2 max pool of the conv input, and poolx is compared with
PyTorch's max-pool backward given the forward's saved indices (ours recomputes the argmax from x,
as knetcnn's poolx takes no indices). Every result is also checked against PyTorch's.

Targets: float64 at least as fast as PyTorch (ratio <= 1), float32 at least half as fast
(ratio <= 2). Without PyTorch only our times are printed.

    python bench/cpu.py [--reps 5] [--dtype float32] [--only vgg]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import knetcnn

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the table then shows our times only
    torch = None

# name, (N, C, H, W), (O, K), keywords
SHAPES = [
    ("lenet1", (64, 1, 28, 28), (20, 5), {}),
    ("lenet2", (64, 20, 12, 12), (50, 5), {}),
    ("vgg", (8, 64, 56, 56), (64, 3), {"padding": 1}),
    ("resnet", (8, 256, 14, 14), (256, 3), {"padding": 1}),
    ("alexnet", (8, 3, 227, 227), (96, 11), {"stride": 4}),
]
TARGET = {"float64": 1.0, "float32": 2.0}


def timed(*fns, reps: int, rounds: int = 3) -> list[float]:
    """Median seconds of each fn() over `rounds` rounds of `reps` runs.

    Each round runs every function in its own block (warm-up first, and a pause before it so
    the other library's worker threads have stopped spinning: alternating call by call would
    make OpenBLAS's and OpenMP's busy-waiting threads slow each other down). Spreading the
    blocks over rounds shares out load from elsewhere on the machine.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, t in zip(fns, times):
            time.sleep(0.05)
            fn()
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def ours(x, w, dy, yp, dyp, kw):
    kw = dict(kw, mode=1)
    return {
        "conv4": lambda: knetcnn.conv4(w, x, **kw),
        "conv4x": lambda: knetcnn.conv4x(w, x, dy, **kw),
        "conv4w": lambda: knetcnn.conv4w(w, x, dy, **kw),
        "pool": lambda: knetcnn.pool(x),
        "poolx": lambda: knetcnn.poolx(x, yp, dyp),
    }


def theirs(x, w, dy, yp, dyp, kw):
    tx, tw, tdy, tdyp = (torch.from_numpy(a) for a in (x, w, dy, dyp))
    stride, padding = kw.get("stride", 1), kw.get("padding", 0)
    _, indices = F.max_pool2d(tx, 2, return_indices=True)
    return {
        "conv4": lambda: F.conv2d(tx, tw, stride=stride, padding=padding),
        "conv4x": lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tdy, stride=stride, padding=padding),
        "conv4w": lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tdy, stride=stride, padding=padding),
        "pool": lambda: F.max_pool2d(tx, 2),
        "poolx": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            tdyp, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per round (3 rounds)")
    parser.add_argument("--dtype", choices=["float32", "float64"], action="append")
    parser.add_argument("--only", action="append", help="shape names to run (default: all)")
    parser.add_argument("--ops", action="append", help="ops to run (default: all)")
    args = parser.parse_args()
    dtypes = args.dtype or ["float64", "float32"]
    rng = np.random.default_rng(0)
    if torch is not None:
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; NumPy {np.__version__}")
    else:
        print("PyTorch not installed: our times only")
    header = f"{'shape':8} {'dtype':8} {'op':7} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}  target"
    print(header)
    print("-" * len(header))
    missed = []
    for name, (n, c, h, wd), (o, k), kw in SHAPES:
        if args.only and name not in args.only:
            continue
        for dtype in dtypes:
            x = rng.standard_normal((n, c, h, wd)).astype(dtype)
            w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
            dy = rng.standard_normal(knetcnn.conv4(w, x, mode=1, **kw).shape).astype(dtype)
            yp = knetcnn.pool(x)
            dyp = rng.standard_normal(yp.shape).astype(dtype)
            mine = ours(x, w, dy, yp, dyp, kw)
            other = theirs(x, w, dy, yp, dyp, kw) if torch is not None else {}
            for op, fn in mine.items():
                if args.ops and op not in args.ops:
                    continue
                if op not in other:
                    (t_ours,) = timed(fn, reps=args.reps)
                    print(f"{name:8} {dtype:8} {op:7} {t_ours * 1e3:9.2f}", flush=True)
                    continue
                _check(op, fn(), other[op]().numpy(), dtype)
                t_ours, t_torch = timed(fn, other[op], reps=args.reps)
                ratio = t_ours / t_torch
                ok = ratio <= TARGET[dtype]
                if not ok:
                    missed.append(f"{name} {dtype} {op}")
                print(
                    f"{name:8} {dtype:8} {op:7} {t_ours * 1e3:9.2f} {t_torch * 1e3:9.2f} {ratio:6.2f}  "
                    f"{'met' if ok else 'MISSED'} (<= {TARGET[dtype]:g})",
                    flush=True,
                )
    if torch is not None:
        print(f"targets missed: {', '.join(missed) if missed else 'none'}")


def _check(op: str, a: np.ndarray, b: np.ndarray, dtype: str) -> None:
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a.astype(np.float64) - b).max()) / scale
    if a.shape != b.shape or err > (1e-4 if dtype == "float32" else 1e-10):
        raise SystemExit(f"{op}: result differs from PyTorch's (shape {a.shape} vs {b.shape}, error {err:.2e})")


if __name__ == "__main__":
    main()
