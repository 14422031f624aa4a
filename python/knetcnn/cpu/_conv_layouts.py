"""Where a convolution block's positions sit in memory: the two im2col layouts.

A block is a range of batch items times a range of output rows along the first spatial axis
(see _chunks). A layout gives, per block: the padded input (`source`), one kernel offset's taps
as an index into it (`tap`; a scatter target has the same form, so the index serves both), and
the moves between GEMM-side arrays (channels, items, *grid) and conv4's own arrays.

Narrow: the grid is the output's positions (rows, *Y[1:]); a tap is a strided view whose rows
are Y[-1] long. NumPy pays a fixed cost per row, which dominates when rows are short.

Wide (stride 1 on the last two axes, d >= 2): each output row is computed over the padded width
Wp instead of Y[-1]. Then one kernel offset's taps over a whole (H, W) plane are a single
contiguous run of the flattened padded plane, starting at kh*Wp + kw: long rows for NumPy, at the
price of Wp - Y[-1] garbage columns per row in the GEMM. Garbage is dropped when results are
stored and is zero in loaded gradients, so it never reaches a result; the only exception is a
non-finite value times that zero (inf * 0 = NaN), so callers use Wide only when the values that
meet garbage are finite (`finite_for_*`).
"""

from __future__ import annotations

import math

import numpy as np

from . import _chunks
from ._layout import offset_slices, row_block


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
        # Kernel offsets (in input cells) in row-major order: the order of w's flattened axes.
        self.offsets = [tuple(j * d for j, d in zip(idx, self.dilation)) for idx in np.ndindex(*self.k)]
        self.padded = tuple(n + 2 * p for n, p in zip(self.x, self.pads))

    def input_rows(self, block: _chunks.Block) -> tuple[int, int]:
        """Padded input rows [a, b) that output rows [r0, r1) read."""
        a = block.r0 * self.stride[0]
        b = (block.r1 - 1) * self.stride[0] + (self.k[0] - 1) * self.dilation[0] + 1
        return a, b


class Narrow:
    def __init__(self, cv: ConvShape):
        self.cv = cv
        self.width = cv.y[-1]  # positions per output row

    def grid(self, b: _chunks.Block) -> tuple[int, ...]:
        return (b.r1 - b.r0,) + self.cv.y[1:]

    def blocks(self, result_bytes: int, itemsize: int) -> list[_chunks.Block]:
        cv = self.cv
        positions = math.prod(cv.y[1:-1]) * self.width
        padded_row = math.prod(cv.padded[1:])
        # Per output row of one item: its columns, its GEMM result / dy copy, its padded input.
        per_row = itemsize * (positions * (cv.c * cv.kp + 2 * cv.o) + cv.c * cv.stride[0] * padded_row)
        return list(_chunks.plan(cv.n, cv.y[0], per_row, result_bytes))

    def source(self, x: np.ndarray, b: _chunks.Block, dtype) -> np.ndarray:
        return row_block(x, slice(b.n0, b.n1), self.cv.input_rows(b), self.cv.pads, dtype)

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        """Index of offset k's taps in the source, and how many of the last grid axis it covers."""
        return offset_slices(self.cv.offsets[k], self.cv.stride, self.grid(b)), self.width

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, dtype) -> np.ndarray:
        a, e = self.cv.input_rows(b)
        if not any(self.cv.pads):  # no padded cells to drop: scatter straight into dx
            return dx[b.n0 : b.n1, :, a:e]
        return np.zeros((b.n1 - b.n0, self.cv.c, e - a) + self.cv.padded[1:], dtype=dtype)

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        """dx[block] += the part of a padded scatter target that lies inside x."""
        if not any(self.cv.pads):
            return
        cv = self.cv
        a, e = cv.input_rows(b)
        lo, hi = max(a - cv.pads[0], 0), min(e - cv.pads[0], cv.x[0])
        if hi <= lo:
            return
        src = (slice(None), slice(None), slice(lo - (a - cv.pads[0]), hi - (a - cv.pads[0])))
        src += tuple(slice(p, p + n) for p, n in zip(cv.pads[1:], cv.x[1:]))
        dx[b.n0 : b.n1, :, lo:hi] += target[src]

    def _rows(self, b: _chunks.Block) -> tuple[int, ...]:
        """The grid unmerged: per channel and item, (rows, ..., width) with garbage columns."""
        return self.grid(b)

    def store(self, y: np.ndarray, b: _chunks.Block, out: np.ndarray) -> None:
        """y[block] = out, out being (O, items, *grid) from the GEMM."""
        rows = out.reshape((out.shape[0], b.n1 - b.n0) + self._rows(b))[..., : self.cv.y[-1]]
        y[b.n0 : b.n1, :, b.r0 : b.r1] = rows.swapaxes(0, 1)

    def load(self, dy: np.ndarray, b: _chunks.Block, dtype) -> np.ndarray:
        """dy[block] as (O, items, *grid), contiguous, garbage columns zero."""
        part = dy[b.n0 : b.n1, :, b.r0 : b.r1].swapaxes(0, 1)
        if self.width == self.cv.y[-1]:
            return np.ascontiguousarray(part, dtype=dtype)
        out = np.zeros((part.shape[0], b.n1 - b.n0) + self._rows(b), dtype=dtype)
        out[..., : self.cv.y[-1]] = part
        return out.reshape(out.shape[:2] + self.grid(b))


def _merge_last_two(a: np.ndarray, *, view: bool = False) -> np.ndarray:
    """a with its last two axes as one: a view for contiguous planes, else a copy (or, with
    view=True, an error: a scatter target must be written in place)."""
    shape = a.shape[:-2] + (a.shape[-2] * a.shape[-1],)
    if not view:
        return a.reshape(shape)
    merged = a.view()
    merged.shape = shape  # raises rather than copying
    return merged


class Wide(Narrow):
    def __init__(self, cv: ConvShape):
        super().__init__(cv)
        self.width = cv.padded[-1]

    @staticmethod
    def fits(cv: ConvShape) -> bool:
        return cv.d >= 2 and cv.stride[-2:] == (1, 1)

    def grid(self, b: _chunks.Block) -> tuple[int, ...]:
        cv = self.cv
        if cv.d == 2:  # the block's rows are the plane's rows
            return ((b.r1 - b.r0) * self.width,)
        return (b.r1 - b.r0,) + cv.y[1:-2] + (cv.y[-2] * self.width,)

    def source(self, x: np.ndarray, b: _chunks.Block, dtype) -> np.ndarray:
        return _merge_last_two(super().source(x, b, dtype))

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        cv = self.cv
        offset = cv.offsets[k]
        grid = self.grid(b)
        run = grid[-1]
        if cv.d == 2:
            plane = (cv.input_rows(b)[1] - cv.input_rows(b)[0]) * self.width
        else:
            plane = cv.padded[-2] * self.width
        start = offset[-2] * self.width + offset[-1]
        # The last row's garbage tail may run past the plane: cut it (it stays zero / unread).
        length = min(run, plane - start)
        outer = offset_slices(offset[:-2], cv.stride[:-2], grid[:-1])
        return outer + (slice(start, start + length),), length

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, dtype) -> np.ndarray:
        return _merge_last_two(super().scatter_target(dx, b, dtype), view=True)

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        if any(self.cv.pads):
            planes = target.shape[:-1] + (target.shape[-1] // self.width, self.width)
            super().add_back(dx, target.reshape(planes), b)

    def _rows(self, b: _chunks.Block) -> tuple[int, ...]:
        return (b.r1 - b.r0,) + self.cv.y[1:-1] + (self.width,)

    def zero_garbage(self, col: np.ndarray, b: _chunks.Block) -> None:
        """Zero the garbage columns of gathered columns (C, K, items, *grid)."""
        rows = col.reshape(col.shape[:3] + self._rows(b))
        rows[..., self.cv.y[-1] :] = 0


def choose(cv: ConvShape, *, scatter: bool):
    """Wide for a scatter (backward-data) with long rows and little garbage; Narrow otherwise.

    Measured on the benchmark shapes (2-core OpenBLAS): the wide scatter runs a VGG conv4x 25%
    faster (short-row adds are what NumPy does worst), while for gathers, which are bound by
    memory traffic rather than per-row cost, and for short rows, whose garbage share is large,
    the extra GEMM columns cost more than they save.
    """
    if scatter and Wide.fits(cv) and (cv.padded[-1] - cv.y[-1]) * MAX_GARBAGE_SHARE_INV <= cv.y[-1]:
        return Wide(cv)
    return Narrow(cv)


MAX_GARBAGE_SHARE_INV = 16  # at most 1 garbage column per 16 real ones
