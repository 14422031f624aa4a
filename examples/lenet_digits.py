"""Train a LeNet-style CNN on scikit-learn's bundled 8x8 digits with knetcnn.

    conv4 -> relu -> pool -> conv4 -> relu -> pool -> dense -> softmax

The forward pass uses knetcnn's conv4, pool and mat; backpropagation uses its gradient calls
(conv4w, conv4x, poolx); NumPy (or CuPy with --device gpu) does the elementwise work and the
dense layer. No download: the data set ships with scikit-learn. Fixed seeds, so runs repeat.

    python examples/lenet_digits.py               # CPU, NumPy arrays
    python examples/lenet_digits.py --device gpu  # device arrays on cuDNN (needs a GPU and CuPy)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import knetcnn

CONV = dict(padding=1)  # 3x3 kernels, 'same' size; Knet's default mode=0 (true convolution)


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def init_params(rng: np.random.Generator):
    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "w1": he((16, 1, 3, 3), 9),
        "b1": np.zeros((1, 16, 1, 1), np.float32),
        "w2": he((32, 16, 3, 3), 16 * 9),
        "b2": np.zeros((1, 32, 1, 1), np.float32),
        "w3": he((10, 32 * 2 * 2), 32 * 2 * 2),
        "b3": np.zeros((10,), np.float32),
    }


def forward(p, x):
    """Returns the logits and what backward needs."""
    z1 = knetcnn.conv4(p["w1"], x, **CONV) + p["b1"]
    a1 = np.maximum(z1, 0) if isinstance(z1, np.ndarray) else z1 * (z1 > 0)
    p1 = knetcnn.pool(a1)
    z2 = knetcnn.conv4(p["w2"], p1, **CONV) + p["b2"]
    a2 = z2 * (z2 > 0)
    p2 = knetcnn.pool(a2)
    f = knetcnn.mat(p2)  # (N, 128): the matrix a dense layer takes
    logits = f @ p["w3"].T + p["b3"]
    return logits, (x, z1, a1, p1, z2, a2, p2, f)


def softmax_loss(xp, logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = xp.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = -xp.log(probs[xp.arange(n), labels] + 1e-12).mean()
    dlogits = probs
    dlogits[xp.arange(n), labels] -= 1
    return float(loss), dlogits / n


def backward(p, cache, dlogits):
    x, z1, a1, p1, z2, a2, p2, f = cache
    g = {"w3": dlogits.T @ f, "b3": dlogits.sum(axis=0)}
    dp2 = (dlogits @ p["w3"]).reshape(p2.shape)
    dz2 = knetcnn.poolx(a2, p2, dp2) * (z2 > 0)
    g["w2"] = knetcnn.conv4w(p["w2"], p1, dz2, **CONV)
    g["b2"] = dz2.sum(axis=(0, 2, 3), keepdims=True)
    dp1 = knetcnn.conv4x(p["w2"], p1, dz2, **CONV)
    dz1 = knetcnn.poolx(a1, p1, dp1) * (z1 > 0)
    g["w1"] = knetcnn.conv4w(p["w1"], x, dz1, **CONV)
    g["b1"] = dz1.sum(axis=(0, 2, 3), keepdims=True)
    return g


class Adam:
    def __init__(self, params, lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, beta1, beta2, eps, 0
        self.m = {k: v * 0 for k, v in params.items()}
        self.v = {k: v * 0 for k, v in params.items()}

    def step(self, params, grads):
        self.t += 1
        for k in params:
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * grads[k]
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * grads[k] ** 2
            mhat = self.m[k] / (1 - self.b1**self.t)
            vhat = self.v[k] / (1 - self.b2**self.t)
            params[k] -= (self.lr * mhat / (vhat**0.5 + self.eps)).astype(params[k].dtype)


def accuracy(xp, params, x, y, batch=256):
    correct = 0
    for i in range(0, x.shape[0], batch):
        logits, _ = forward(params, x[i : i + batch])
        correct += int((logits.argmax(axis=1) == y[i : i + batch]).sum())
    return correct / x.shape[0]


def choose_device(name: str):
    """Returns (array module, where-it-ran text); exits with the reason when no GPU is usable."""
    if name == "cpu":
        return np, f"CPU (knetcnn NumPy backend, {os.cpu_count()} cores)"
    reason = knetcnn.info()["no_device_reason"]
    if reason:
        sys.exit(f"--device gpu: no GPU is usable here: {reason}. Run without --device gpu for the CPU backend.")
    try:
        import cupy
    except ImportError:
        sys.exit("--device gpu needs CuPy for the elementwise work: pip install cupy-cuda12x")
    dev = knetcnn.info()["devices"][0]
    return cupy, f"GPU {dev['name']} (cuDNN {knetcnn.info()['cudnn_runtime']})"


def save_figure(path, history, w1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    epochs = np.arange(1, len(history) + 1)
    ax.plot(epochs, [h[0] for h in history], "o-", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h[1] for h in history], "s-", color="tab:orange", label="test accuracy")
    ax2.set_ylabel("test accuracy")
    ax.set_title("training curve")
    side = int(np.ceil(np.sqrt(w1.shape[0])))
    grid = fig.add_gridspec(side, side, left=0.6, right=0.95, wspace=0.1, hspace=0.1)
    for i in range(w1.shape[0]):
        a = fig.add_subplot(grid[i // side, i % side])
        a.imshow(w1[i, 0], cmap="gray")
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle("LeNet on 8x8 digits with knetcnn: first-layer 3x3 filters on the right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--train-limit", type=int, default=0, help="use only this many training images (smoke tests)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bars (for logs)")
    args = ap.parse_args(argv)

    xp, where = choose_device(args.device)
    from tqdm import tqdm

    x_train, x_test, y_train, y_test = load_data(args.seed)
    if args.train_limit:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    rng = np.random.default_rng(args.seed)
    params = {k: xp.asarray(v) for k, v in init_params(rng).items()}
    x_train, x_test, y_train, y_test = (xp.asarray(a) for a in (x_train, x_test, y_train, y_test))
    opt = Adam(params, lr=args.lr)
    print(f"knetcnn {knetcnn.__version__}: training LeNet on {x_train.shape[0]} digits, testing on "
          f"{x_test.shape[0]}; running on {where}")

    history, epoch_times = [], []
    initial_accuracy = accuracy(xp, params, x_test, y_test)
    for epoch in range(1, args.epochs + 1):
        # cosine decay: large steps early, small ones at the end so the last epochs settle
        opt.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / max(args.epochs, 1)))
        start = time.perf_counter()
        order = rng.permutation(x_train.shape[0])
        batches = range(0, len(order), args.batch)
        bar = tqdm(batches, desc=f"epoch {epoch:2d}/{args.epochs}", unit="batch", leave=False,
                   disable=args.no_progress)
        total = 0.0
        for i in bar:
            idx = xp.asarray(order[i : i + args.batch])
            logits, cache = forward(params, x_train[idx])
            loss, dlogits = softmax_loss(xp, logits, y_train[idx])
            opt.step(params, backward(params, cache, dlogits))
            total += loss * len(idx)
            bar.set_postfix(loss=f"{loss:.3f}")
        epoch_times.append(time.perf_counter() - start)
        acc = accuracy(xp, params, x_test, y_test)
        history.append((total / len(order), acc))
        print(f"epoch {epoch:2d}: loss {history[-1][0]:.4f}  test accuracy {acc:.4f}  ({epoch_times[-1]:.2f} s)")

    final = history[-1][1] if history else initial_accuracy
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "lenet_digits.png")
    w1 = params["w1"].get() if hasattr(params["w1"], "get") else params["w1"]
    save_figure(png, history, np.asarray(w1))
    print(f"test accuracy {final:.4f} (before training {initial_accuracy:.4f}); "
          f"{np.mean(epoch_times):.2f} s per epoch, {sum(epoch_times):.1f} s in all on {where}")
    print(f"saved the training curve and first-layer filters to {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
