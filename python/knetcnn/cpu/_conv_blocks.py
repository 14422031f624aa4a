"""How a convolution is cut into blocks, and how a block's arrays reach the compiled kernels.

A block is a range of batch items times a range of output rows along the first spatial axis
(see _chunks). Its GEMM columns are ordered (item, *Y): column matrix (C*K, items*rows*Y[1:]),
GEMM results and gradients (O, items*rows*Y[1:]). The core's im2col / col2im (csrc/core/cpu_conv)
move data between those matrices and x / dx, reading and writing them in place (padding is
handled in the kernels); `store` and `load` move data between them and y / dy with one
transposing NumPy copy per block, or the GEMM works on y / dy in place (`matrix_view`) where the
block is a single item.
"""

from __future__ import annotations

import math

import numpy as np

from .._core import core
from . import _chunks
from ._scratch import Scratch


# Blocks have at least this many GEMM columns, even where that takes more than _chunks'
# TARGET_BYTES: OpenBLAS runs narrower products well below its peak (ResNet's 256 x 2304 x 196 per
# item: 1.2-1.4x slower than 4 items at once).
MIN_COLUMNS = 1024

# The kernels run on this thread only. Measured in-process against parallel_for's 2 threads
# (interleaved A/B over the benchmark shapes): never faster, 1.05-1.3x slower on LeNet. After each
# product OpenBLAS's worker threads busy-wait (~0.1 s, no sched_yield) for the next one, so a
# second thread of ours finds its core taken.
PARALLEL_KERNELS = False


class ConvShape:
    """The geometry's numbers, unpacked once (conv4's forward terms)."""

    def __init__(self, g):
        self.input_shape = tuple(g.input_shape)
        self.output_shape = tuple(g.output_shape)
        self.filter_shape = tuple(g.filter_shape)
        self.n, self.c = self.input_shape[:2]
        self.o = self.output_shape[1]
        self.x = self.input_shape[2:]
        self.y = self.output_shape[2:]
        self.k = self.filter_shape[2:]
        self.d = len(self.k)
        self.pads, self.stride, self.dilation = tuple(g.padding), tuple(g.stride), tuple(g.dilation)
        self.mode, self.groups = g.mode, g.group
        self.cg, self.og = self.c // self.groups, self.o // self.groups
        self.kp = math.prod(self.k)

    def blocks(self, result_bytes: int, itemsize: int) -> list[_chunks.Block]:
        positions = math.prod(self.y[1:])
        # Per output row of one item: its columns, its GEMM result / dy copy, a converted input copy.
        per_row = itemsize * (positions * (self.c * self.kp + 2 * self.o) + self.c * self.stride[0] * math.prod(self.x[1:]))
        target = max(_chunks.TARGET_BYTES, per_row * -(-MIN_COLUMNS // positions))
        return list(_chunks.plan(self.n, self.y[0], per_row, result_bytes, target=target))

    def columns(self, b: _chunks.Block) -> int:
        return (b.n1 - b.n0) * (b.r1 - b.r0) * math.prod(self.y[1:])

    def input_rows(self, b: _chunks.Block) -> tuple[int, int]:
        """The rows [lo, hi) of x (unpadded) that output rows [r0, r1) read."""
        a = b.r0 * self.stride[0] - self.pads[0]
        e = (b.r1 - 1) * self.stride[0] + (self.k[0] - 1) * self.dilation[0] + 1 - self.pads[0]
        return max(a, 0), max(min(e, self.x[0]), max(a, 0))

    def window(self, b: _chunks.Block, origin_row: int = 0) -> dict:
        """The kernels' window for block b, spatial axes lifted to three (leading size-1 axes)."""
        lift = 3 - self.d
        origin = [0] * 3
        origin[lift] = origin_row
        begin, end = [0] * 3, [1] * lift + list(self.y)
        begin[lift], end[lift] = b.r0, b.r1
        return dict(
            kernel=(1,) * lift + self.k,
            stride=(1,) * lift + self.stride,
            dilation=(1,) * lift + self.dilation,
            padding=(0,) * lift + self.pads,
            origin=tuple(origin),
            out_begin=tuple(begin),
            out_end=tuple(end),
        )

    def lifted(self, a: np.ndarray) -> np.ndarray:
        """a (items, C, *spatial) as a 5-D view with size-1 leading spatial axes."""
        return a.reshape(a.shape[:2] + (1,) * (3 - self.d) + a.shape[2:])

    def gather(self, x: np.ndarray, b: _chunks.Block, col: np.ndarray, scratch: Scratch) -> None:
        """col = block b's columns of x."""
        if _kernel_ready(x, scratch.dtype):
            source, origin = x[b.n0 : b.n1], 0
        else:  # another dtype (float16), or misaligned: convert just the rows this block reads
            lo, hi = self.input_rows(b)
            part = x[b.n0 : b.n1, :, lo:hi]
            source, origin = scratch.array("source", part.shape), lo
            source[...] = part
        core.im2col(self.lifted(source), col, **self.window(b, origin), parallel=PARALLEL_KERNELS)

    def scatter(self, dcol: np.ndarray, dx: np.ndarray, b: _chunks.Block) -> None:
        """dx += block b's columns dcol, scattered back (dx is C-contiguous, compute dtype)."""
        core.col2im(dcol, self.lifted(dx[b.n0 : b.n1]), **self.window(b), parallel=PARALLEL_KERNELS)

    def matrix_view(self, a: np.ndarray, b: _chunks.Block, dtype: np.dtype) -> np.ndarray | None:
        """a[block] (y or dy) as the GEMM's (O, columns) without a copy, or None where it takes one.

        That works for a block of one item: its rows of each channel are one contiguous run, so the
        GEMM reads or writes them in place with a leading dimension (row blocks: VGG, AlexNet; 5%
        faster there than a transposing copy).
        """
        if b.n1 - b.n0 != 1:
            return None
        view = _in_place(a[b.n0, :, b.r0 : b.r1], (self.o, -1), dtype)
        if view is None:
            return None
        rows, cells = view.strides
        blas_ready = cells == view.itemsize and rows % view.itemsize == 0 and rows >= view.shape[1] * cells
        return view if blas_ready else None

    def items_view(self, a: np.ndarray, b: _chunks.Block, dtype: np.dtype) -> np.ndarray | None:
        """a[block] (dy) as (items, G, Og, positions) without a copy, or None where it takes one."""
        return _in_place(a[b.n0 : b.n1, :, b.r0 : b.r1], (b.n1 - b.n0, self.groups, self.og, -1), dtype)

    def store(self, y: np.ndarray, b: _chunks.Block, out: np.ndarray) -> None:
        """y[block] = out, the GEMM's (O, columns)."""
        rows = out.reshape((self.o, b.n1 - b.n0, b.r1 - b.r0) + self.y[1:])
        y[b.n0 : b.n1, :, b.r0 : b.r1] = rows.swapaxes(0, 1)

    def load(self, dy: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        """dy[block] as the GEMM's (O, columns)."""
        part = dy[b.n0 : b.n1, :, b.r0 : b.r1].swapaxes(0, 1)
        out = scratch.array("dy", part.shape)
        out[...] = part
        return out.reshape(self.o, -1)


def _in_place(part: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """part reshaped to `shape` as a view of the same memory, or None where that needs a copy (a
    channel's rows not one run) or part is not in the compute dtype, aligned."""
    if part.dtype != dtype or not part.flags.aligned:
        return None
    view = part.view()
    try:
        view.shape = shape  # raises where the reshape would need a copy
    except AttributeError:
        return None
    return view


def _kernel_ready(a: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the kernels can read `a` in place: the compute dtype, aligned, whole-element strides."""
    return a.dtype == dtype and a.flags.aligned and all(s % a.itemsize == 0 for s in a.strides)
