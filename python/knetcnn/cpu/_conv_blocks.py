"""How a convolution is cut into blocks, and how a block's arrays reach the compiled kernels.

A block is a range of batch items times a box of output positions: whole items, or ranges of
output rows, cut along the next axes only where one row alone is past the budget (_chunks).
Its GEMM columns are ordered
(item, *box), box its output positions: column matrix (C*K, items*prod(box)), GEMM results and
gradients (O, items*prod(box)). The core's im2col / col2im (csrc/core/cpu_conv)
move data between those matrices and x / dx, reading and writing them in place (padding is
handled in the kernels); `store` and `load` move data between them and y / dy with one
transposing NumPy copy per block, or the GEMM works on y / dy in place (`matrix_view`) where the
block is a single item.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from .._core import core
from . import _chunks
from ._scratch import Scratch


# Blocks have at least this many GEMM columns, even where that takes more than _chunks'
# TARGET_BYTES: OpenBLAS runs narrower products well below its peak (ResNet's 256 x 2304 x 196 per
# item: 1.2-1.4x slower than 4 items at once).
MIN_COLUMNS = 1024

# Input the kernels cannot read in place is converted for them, just the cells a block reads; where
# that would be more than this many times the block's columns (strides or dilations far wider than
# the kernel: most of the cells skipped), the block is gathered straight from x instead.
CONVERT_AT_MOST = 2

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

    def blocks(self, result_bytes: int, itemsize: int) -> Iterator[_chunks.Block]:
        """The blocks, made as they are used (a tiny budget can mean very many)."""
        positions = math.prod(self.y[1:])
        # Per output position: its columns, its GEMM result / dy copy, and its share of a
        # converted input copy (about C * prod(stride) cells).
        per_position = itemsize * (self.c * self.kp + 2 * self.o + self.c * math.prod(self.stride))
        # At least MIN_COLUMNS columns: whole rows where rows are shorter (rows are only cut when
        # one alone is past the budget, and then into runs of MIN_COLUMNS).
        columns = positions * -(-MIN_COLUMNS // positions) if positions < MIN_COLUMNS else MIN_COLUMNS
        target = max(_chunks.TARGET_BYTES, per_position * columns)
        return _chunks.plan(self.n, self.y, per_position, result_bytes, target=target)

    def index(self, b: _chunks.Block) -> tuple[slice, ...]:
        """Block b's part of y or dy."""
        return (slice(b.n0, b.n1), slice(None)) + tuple(slice(begin, end) for begin, end in b.box)

    def columns(self, b: _chunks.Block) -> int:
        return (b.n1 - b.n0) * math.prod(end - begin for begin, end in b.box)

    def input_range(self, axis: int, begin: int, end: int) -> tuple[int, int]:
        """The cells [lo, hi) of x (unpadded) along `axis` that outputs [begin, end) read."""
        a = begin * self.stride[axis] - self.pads[axis]
        e = (end - 1) * self.stride[axis] + (self.k[axis] - 1) * self.dilation[axis] + 1 - self.pads[axis]
        return max(a, 0), max(min(e, self.x[axis]), max(a, 0))

    def window(self, b: _chunks.Block, origin: tuple[int, ...] = ()) -> dict:
        """The kernels' window for block b, spatial axes lifted to three (leading size-1 axes);
        `origin`: x's cell at the source's (0, 0, 0) (default all 0)."""
        lift = 3 - self.d
        return dict(
            kernel=(1,) * lift + self.k,
            stride=(1,) * lift + self.stride,
            dilation=(1,) * lift + self.dilation,
            padding=(0,) * lift + self.pads,
            origin=(0,) * lift + (tuple(origin) or (0,) * self.d),
            out_begin=(0,) * lift + tuple(begin for begin, _ in b.box),
            out_end=(1,) * lift + tuple(end for _, end in b.box),
        )

    def lifted(self, a: np.ndarray) -> np.ndarray:
        """a (items, C, *spatial) as a 5-D view with size-1 leading spatial axes."""
        return a.reshape(a.shape[:2] + (1,) * (3 - self.d) + a.shape[2:])

    def gather(self, x: np.ndarray, b: _chunks.Block, col: np.ndarray, scratch: Scratch) -> None:
        """col = block b's columns of x."""
        if _kernel_ready(x, scratch.dtype):
            core.im2col(self.lifted(x[b.n0 : b.n1]), col, **self.window(b), parallel=PARALLEL_KERNELS)
            return
        # Another dtype (float16, byte-swapped) or misaligned: convert the cells this block reads
        # for the compiled gather, or gather from x a kernel offset at a time (CONVERT_AT_MOST).
        ranges = [self.input_range(axis, begin, end) for axis, (begin, end) in enumerate(b.box)]
        part = x[(slice(b.n0, b.n1), slice(None)) + tuple(slice(lo, hi) for lo, hi in ranges)]
        if part.size > CONVERT_AT_MOST * col.size:
            self._gather_by_offsets(x, b, col)
            return
        source = scratch.array("source", part.shape)
        source[...] = part
        origin = tuple(lo for lo, _ in ranges)
        core.im2col(self.lifted(source), col, **self.window(b, origin), parallel=PARALLEL_KERNELS)

    def _gather_by_offsets(self, x: np.ndarray, b: _chunks.Block, col: np.ndarray) -> None:
        """col = block b's columns of x, one NumPy copy (converting) per kernel offset."""
        box = b.box
        by_offset = col.reshape((self.c,) + self.k + (b.n1 - b.n0,) + tuple(end - begin for begin, end in box))
        by_offset.fill(0)  # padding
        channels_first = x[b.n0 : b.n1].swapaxes(0, 1)
        for offset in np.ndindex(*self.k):
            source, target = [slice(None)] * 2, [slice(None)] * 2
            for axis, (begin, end) in enumerate(box):
                s, shift = self.stride[axis], offset[axis] * self.dilation[axis] - self.pads[axis]
                # Outputs o whose input cell o * s + shift lies inside x.
                lo, hi = max(begin, -(shift // s)), min(end, (self.x[axis] - 1 - shift) // s + 1)
                if hi <= lo:
                    break  # this offset reads only padding for the block
                source.append(slice(lo * s + shift, (hi - 1) * s + shift + 1, s))
                target.append(slice(lo - begin, hi - begin))
            else:
                by_offset[(slice(None),) + offset][tuple(target)] = channels_first[tuple(source)]

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
        view = _in_place(a[self.index(b)], (self.o, -1), dtype)
        if view is None:
            return None
        rows, cells = view.strides
        blas_ready = cells == view.itemsize and rows % view.itemsize == 0 and rows >= view.shape[1] * cells
        return view if blas_ready else None

    def items_view(self, a: np.ndarray, b: _chunks.Block, dtype: np.dtype) -> np.ndarray | None:
        """a[block] (dy) as (items, G, Og, positions) without a copy, or None where it takes one."""
        return _in_place(a[self.index(b)], (b.n1 - b.n0, self.groups, self.og, -1), dtype)

    def store(self, y: np.ndarray, b: _chunks.Block, out: np.ndarray) -> None:
        """y[block] = out, the GEMM's (O, columns)."""
        part = out.reshape((self.o, b.n1 - b.n0) + tuple(end - begin for begin, end in b.box))
        y[self.index(b)] = part.swapaxes(0, 1)

    def load(self, dy: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        """dy[block] as the GEMM's (O, columns)."""
        part = dy[self.index(b)].swapaxes(0, 1)
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
