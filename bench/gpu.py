"""GPU benchmark: knetcnn on cuDNN against PyTorch (cudnn.benchmark=True) in the same run.

ResNet-50 / VGG-16 layer shapes at N=32, float32 and float16: forward (conv4), data gradient
(conv4x), filter gradient (conv4w) and max pooling. Prints TFLOP/s, the time ratio
knetcnn/PyTorch (below 1 means knetcnn is faster), per-call host overhead and first-call
(algorithm search) latency. Both libraries work on the same torch CUDA tensors.

    python bench/gpu.py [--reps 50] [--dtypes float32,float16]

Needs a GPU and PyTorch with CUDA; elsewhere it says why and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# (name, C, H, W, O, K, stride, padding)
CONV_LAYERS = [
    ("resnet 56x56 64->64 3x3", 64, 56, 56, 64, 3, 1, 1),
    ("resnet 56x56 64->256 1x1", 64, 56, 56, 256, 1, 1, 0),
    ("resnet 28x28 128->128 3x3", 128, 28, 28, 128, 3, 1, 1),
    ("resnet 14x14 256->256 3x3", 256, 14, 14, 256, 3, 1, 1),
    ("resnet 7x7 512->512 3x3", 512, 7, 7, 512, 3, 1, 1),
    ("stem 224x224 3->64 7x7 s2", 3, 224, 224, 64, 7, 2, 3),
]
# (name, C, H, W, window, stride, padding)
POOL_LAYERS = [("maxpool 112x112x64 3x3 s2 p1", 64, 112, 112, 3, 2, 1)]
N = 32


def gpu_time(torch, fn, reps: int) -> float:
    """Median seconds per call, timed with CUDA events after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def first_call(torch, fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def host_overhead(torch, fn, reps: int = 200) -> float:
    """Host seconds per call for a tiny problem: what the Python/C++ layers cost."""
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t) / reps
    torch.cuda.synchronize()
    return host


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--dtypes", default="float32,float16")
    args = ap.parse_args(argv)

    import knetcnn

    reason = knetcnn.info()["no_device_reason"]
    if reason:
        print(f"bench/gpu.py: no GPU is usable here ({reason}); nothing to measure.")
        return 0
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("bench/gpu.py: PyTorch is not installed; it is the peer this benchmark compares with.")
        return 0
    if not torch.cuda.is_available():
        print("bench/gpu.py: PyTorch has no CUDA; install a CUDA build of PyTorch.")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False  # knetcnn's default: no TF32
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; knetcnn {knetcnn.__version__} "
          f"(cuDNN {knetcnn.info()['cudnn_runtime']}), torch {torch.__version__} "
          f"(cuDNN {torch.backends.cudnn.version()})")

    hdr = f"{'layer':<30} {'dtype':<8} {'op':<6} {'knetcnn ms':>10} {'torch ms':>9} {'TFLOP/s':>8} {'ratio':>6} {'1st call ms (k/t)':>18}"
    print(hdr)
    print("-" * len(hdr))
    with knetcnn.options(algo="benchmark"):
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            for name, C, H, W, O, K, s, p in CONV_LAYERS:
                x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
                w = torch.randn(O, C, K, K, device=dev, dtype=dtype) * 0.05
                y = F.conv2d(x, w, stride=s, padding=p)
                dy = torch.randn_like(y)
                kw = dict(padding=p, stride=s, mode=1)  # mode=1: cross-correlation, as PyTorch
                flops = 2.0 * N * O * C * K * K * y.shape[2] * y.shape[3]
                ops = {
                    "fwd": (lambda: knetcnn.conv4(w, x, **kw), lambda: F.conv2d(x, w, stride=s, padding=p)),
                    "dgrad": (lambda: knetcnn.conv4x(w, x, dy, **kw),
                              lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=p)),
                    "wgrad": (lambda: knetcnn.conv4w(w, x, dy, **kw),
                              lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=p)),
                }
                for op, (ours, theirs) in ops.items():
                    f_ours, f_theirs = first_call(torch, ours), first_call(torch, theirs)
                    t_ours, t_theirs = gpu_time(torch, ours, args.reps), gpu_time(torch, theirs, args.reps)
                    print(f"{name:<30} {dtype_name:<8} {op:<6} {t_ours*1e3:>10.3f} {t_theirs*1e3:>9.3f} "
                          f"{flops/t_ours/1e12:>8.1f} {t_ours/t_theirs:>6.2f} {f_ours*1e3:>8.1f}/{f_theirs*1e3:<8.1f}")
            for name, C, H, W, win, s, p in POOL_LAYERS:
                x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
                ours = lambda: knetcnn.pool(x, window=win, stride=s, padding=p)  # noqa: E731
                theirs = lambda: F.max_pool2d(x, win, stride=s, padding=p)  # noqa: E731
                t_ours, t_theirs = gpu_time(torch, ours, args.reps), gpu_time(torch, theirs, args.reps)
                print(f"{name:<30} {dtype_name:<8} {'pool':<6} {t_ours*1e3:>10.3f} {t_theirs*1e3:>9.3f} "
                      f"{'':>8} {t_ours/t_theirs:>6.2f}")

    tiny_x = torch.randn(1, 1, 8, 8, device=dev)
    tiny_w = torch.randn(1, 1, 3, 3, device=dev)
    ours = host_overhead(torch, lambda: knetcnn.conv4(tiny_w, tiny_x, mode=1))
    theirs = host_overhead(torch, lambda: F.conv2d(tiny_x, tiny_w))
    print(f"\nper-call host overhead (1x1x8x8 conv): knetcnn {ours*1e6:.1f} us, torch {theirs*1e6:.1f} us, "
          f"ratio {ours/theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
