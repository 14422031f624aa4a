"""CPU benchmark: knetcnn's NumPy backend against PyTorch CPU, measured in the same run.

Times conv4, conv4x, conv4w, pool and poolx on LeNet, VGG, ResNet and AlexNet-stem shapes in
float32 and float64 (medians over rounds of samples; a sample repeats a short call to 2 ms) and
prints ours/torch ratios (the median over rounds of each round's ratio of medians). A round
measures every case once, so each case's rounds are spread over the whole run. conv4 runs
with mode=1, PyTorch's cross-correlation; conv4x is compared with torch.nn.grad.conv2d_input,
conv4w with conv2d_weight; pool is a 2x2 max pool of the conv input, and poolx is compared with
PyTorch's max-pool backward given the forward's saved indices (ours recomputes the argmax from x,
as knetcnn's poolx takes no indices); pool+poolx times the whole max-pool step of training
(forward, then backward) on both sides. Every result is also checked against PyTorch's.

Targets: float64 at least as fast as PyTorch (ratio <= 1), float32 at least half as fast
(ratio <= 2). Without PyTorch only our times are printed.

    python bench/cpu.py [--reps 5] [--dtype float32] [--only vgg]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
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


def _busy_fraction(interval: float = 0.1) -> float:
    """Share of the machine's CPU time spent busy over `interval` (Linux /proc/stat; 0 elsewhere)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


PAUSE = 0.25  # seconds between blocks: longer than OpenBLAS's thread spin timeout
QUIET = 0.15  # at most this share of the machine busy before a measurement starts
noisy_rounds = 0


def wait_for_quiet(max_wait: float) -> None:
    """Other work on a shared 2-core machine skews timings badly (a 2-thread BLAS whose thread
    is descheduled stalls): wait, up to max_wait seconds, until the machine is idle."""
    global noisy_rounds
    deadline = time.monotonic() + max_wait
    while _busy_fraction() > QUIET:
        if time.monotonic() > deadline:
            noisy_rounds += 1
            return
        time.sleep(0.5)


SAMPLE = 2e-3  # seconds: a sample repeats a short call until it takes at least this long


def calls_per_sample(fn) -> int:
    """How many back-to-back calls of fn make one sample of at least SAMPLE seconds (timeit's
    autorange idea): a 20 us pooling call timed alone is mostly timer and cache noise. Timed
    after a warm-up call, over calls adding up to a quarter of a sample: a first, cold call can
    take 10x longer and would leave samples of a few calls."""
    fn()
    once = math.inf
    for _ in range(3):  # the fastest of three tries: one can land on a stall
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= SAMPLE / 4 or calls >= 1000:
                break
        once = min(once, elapsed / calls)
    return max(1, min(1000, int(SAMPLE / max(once, 1e-9)) + 1))


def _block(fn, number: int, reps: int) -> list[float]:
    """Seconds per call of `reps` samples of `number` calls, after a pause and one untimed sample:
    after the pause the first milliseconds of either library run up to 1.5x slower (caches, and
    the virtual CPU's clock)."""
    time.sleep(PAUSE)
    for _ in range(number):
        fn()
    run = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        run.append((time.perf_counter() - t0) / number)
    return run


class Case:
    """One row of the table: an op on a shape and dtype, ours and (when torch is there) theirs."""

    def __init__(self, name: str, dtype: str, op: str, fns: tuple):
        self.name, self.dtype, self.op, self.fns = name, dtype, op, fns
        self.numbers = [calls_per_sample(fn) for fn in fns]
        self.times: list[list[float]] = [[] for _ in fns]
        self.ratios: list[float] = []

    def measure_round(self, r: int, reps: int, max_wait: float) -> None:
        """One round: every function in its own block, after a pause long enough for the other
        library's idle worker threads to stop spinning (OpenBLAS's spin for ~0.1 s after a call;
        without the pause a library measured right after the other one runs several times
        slower) and an untimed sample (_block). The blocks' order turns every round, so neither
        side always runs first. The ratio is taken within the round, so load arriving from
        outside tends to fall on both sides of it."""
        wait_for_quiet(max_wait)
        order = list(range(len(self.fns)))
        order = order[r % len(order) :] + order[: r % len(order)]
        medians = [0.0] * len(self.fns)
        for i in order:
            run = _block(self.fns[i], self.numbers[i], reps)
            self.times[i].extend(run)
            medians[i] = statistics.median(run)
        if len(self.fns) > 1:
            self.ratios.append(medians[0] / medians[1])

    def medians(self) -> tuple[list[float], float]:
        """Median seconds per call of each function, and the median over rounds of the ratio."""
        ratio = statistics.median(self.ratios) if self.ratios else float("nan")
        return [statistics.median(t) for t in self.times], ratio


def measure(cases: list[Case], reps: int, rounds: int, max_wait: float) -> None:
    """Rounds are the outer loop: each round measures every case once, so a case's rounds lie
    minutes apart. Outside load on these shared machines comes in episodes of seconds (one
    virtual CPU running at half speed, unseen by wait_for_quiet); with a case's rounds back to
    back, one episode could cover all of them, while spread out it spoils at most one or two,
    which the median over rounds then drops."""
    for r in range(rounds):
        for case in cases:
            case.measure_round(r, reps, max_wait)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)


def ours(x, w, dy, yp, dyp, kw):
    kw = dict(kw, mode=1)
    return {
        "conv4": lambda: knetcnn.conv4(w, x, **kw),
        "conv4x": lambda: knetcnn.conv4x(w, x, dy, **kw),
        "conv4w": lambda: knetcnn.conv4w(w, x, dy, **kw),
        "pool": lambda: knetcnn.pool(x),
        "poolx": lambda: knetcnn.poolx(x, yp, dyp),
        "pool+poolx": lambda: knetcnn.poolx(x, knetcnn.pool(x), dyp),
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
        "pool+poolx": lambda: _torch_pool_step(tx, tdyp),
    }


def _torch_pool_step(tx, tdyp):
    """Max-pool forward that saves indices, then the backward: what a training step pays."""
    _, indices = torch.ops.aten.max_pool2d_with_indices(tx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    return torch.ops.aten.max_pool2d_with_indices_backward(tdyp, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed samples per round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds over all cases; the blocks' order turns each round"
    )
    parser.add_argument(
        "--max-wait", type=float, default=20.0, help="seconds each round may wait for an idle machine (0: never)"
    )
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
    header = f"{'shape':8} {'dtype':8} {'op':10} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}  target"
    cases = []
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
                if op in other:
                    _check(op, fn(), other[op]().numpy(), dtype)
                    cases.append(Case(name, dtype, op, (fn, other[op])))
                else:
                    cases.append(Case(name, dtype, op, (fn,)))
    measure(cases, args.reps, args.rounds, args.max_wait)
    print(header)
    print("-" * len(header))
    missed = []
    for case in cases:
        (t_ours, *t_torch), ratio = case.medians()
        row = f"{case.name:8} {case.dtype:8} {case.op:10} {t_ours * 1e3:9.2f}"
        if not t_torch:
            print(row)
            continue
        ok = ratio <= TARGET[case.dtype]
        if not ok:
            missed.append(f"{case.name} {case.dtype} {case.op}")
        print(f"{row} {t_torch[0] * 1e3:9.2f} {ratio:6.2f}  {'met' if ok else 'MISSED'} (<= {TARGET[case.dtype]:g})")
    if torch is not None:
        print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    if noisy_rounds:
        print(f"{noisy_rounds} rounds started on a busy machine (> {QUIET:.0%} CPU in use elsewhere)")


def _check(op: str, a: np.ndarray, b: np.ndarray, dtype: str) -> None:
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a.astype(np.float64) - b).max()) / scale
    if a.shape != b.shape or err > (1e-4 if dtype == "float32" else 1e-10):
        raise SystemExit(f"{op}: result differs from PyTorch's (shape {a.shape} vs {b.shape}, error {err:.2e})")


if __name__ == "__main__":
    main()
