"""Where a convolution block's positions sit in memory: four im2col layouts.

A block is a range of batch items times a range of output rows along the first spatial axis
(see _chunks). Per block a layout builds the padded input (`source`) and moves data between
conv4's arrays and the GEMM's (channels, K, columns) / (channels, columns) matrices: `gather`
(im2col), `scatter` (col2im, added into `scatter_target`, then `add_back` into dx), `store`
(GEMM result into y) and `load` (dy as a GEMM operand). NumPy pays a fixed cost (~20 ns) per
contiguous row it copies or adds, and adds rows shorter than its buffer through that buffer
(see _layout.unbuffered_rows), so the layouts differ in how long those rows are:

- Narrow: columns ordered (item, *Y); a kernel offset's taps are rows of Y[-1] cells.
- Wide (stride 1 on the last two axes): every output row is computed over the padded width Wp
  instead of Y[-1], so an offset's taps over a whole (H, W) plane are one contiguous run of the
  flattened plane (from kh*Wp + kw). The Wp - Y[-1] garbage columns per row are dropped on
  store and zero in loaded gradients; callers use Wide only where the values that meet garbage
  are finite (inf * 0 = NaN).
- BatchLast (stride 1 on the last axis): the input is transposed to (C, *X, N), so an offset's
  taps are rows of Y[-1] * items cells, at the price of transposing x and y (or dy, dx) once.
- Phased (any strides, d >= 2): Wide on the stride phases of the plane. The padded block is
  split once into the phases its offsets read, each a (rows, ceil(Wp / s)) plane in which an
  offset's taps are again one contiguous run; scatters add the phases back into dx once.

`choose` picks by a cost model of those prices.
"""

from __future__ import annotations

import math

import numpy as np

from . import _chunks
from ._layout import offset_slices, row_block, unbuffered_rows
from ._scratch import Scratch


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

    def owns(self, block: _chunks.Block) -> bool:
        """Whether block covers whole items: then no other block adds into its part of dx."""
        return block.r0 == 0 and block.r1 == self.y[0]

    def interior(self, rows: tuple[int, int]) -> tuple[tuple, slice]:
        """For a padded block of input rows [a, b): (index of its cells inside x, x's rows)."""
        a, b = rows
        lo, hi = max(a - self.pads[0], 0), min(b - self.pads[0], self.x[0])
        inside = (slice(lo - (a - self.pads[0]), max(hi, lo) - (a - self.pads[0])),)
        inside += tuple(slice(p, p + n) for p, n in zip(self.pads[1:], self.x[1:]))
        return inside, slice(lo, max(hi, lo))


class Narrow:
    def __init__(self, cv: ConvShape):
        self.cv = cv
        self.width = cv.y[-1]  # GEMM columns per output row

    def rows(self, b: _chunks.Block) -> tuple[int, ...]:
        """Per channel and item: (rows, ..., width), garbage columns included."""
        return (b.r1 - b.r0,) + self.cv.y[1:-1] + (self.width,) if self.cv.d > 1 else (b.r1 - b.r0,)

    def grid(self, b: _chunks.Block) -> tuple[int, ...]:
        """Per channel and item, the shape a kernel offset's taps take."""
        return self.rows(b)

    def columns(self, b: _chunks.Block) -> int:
        return (b.n1 - b.n0) * math.prod(self.grid(b))

    def blocks(self, result_bytes: int, itemsize: int) -> list[_chunks.Block]:
        cv = self.cv
        positions = math.prod(cv.y[1:-1]) * self.width if cv.d > 1 else 1
        # Per output row of one item: its columns, its GEMM result / dy copy, its padded input.
        per_row = itemsize * (positions * (cv.c * cv.kp + 2 * cv.o) + cv.c * cv.stride[0] * math.prod(cv.padded[1:]))
        return list(_chunks.plan(cv.n, cv.y[0], per_row, result_bytes))

    def source(self, x: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        allocate = lambda shape: scratch.array("source", shape, zero=True)  # noqa: E731
        return row_block(x, slice(b.n0, b.n1), self.cv.input_rows(b), self.cv.pads, scratch.dtype, allocate)

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        """Index of offset k's taps in a source, and how much of the last grid axis it fills."""
        return offset_slices(self.cv.offsets[k], self.cv.stride, self.grid(b)), self.grid(b)[-1]

    def _by_offset(self, flat: np.ndarray, b: _chunks.Block) -> np.ndarray:
        return flat.reshape((self.cv.c, self.cv.kp, b.n1 - b.n0) + self.grid(b))

    def gather(self, src: np.ndarray, col: np.ndarray, b: _chunks.Block) -> None:
        col = self._by_offset(col, b)
        for k in range(self.cv.kp):
            index, length = self.tap(k, b)
            dest = col[:, k]
            dest[..., :length] = src[index].swapaxes(0, 1)
            dest[..., length:] = 0  # a wide layout's cut garbage tail

    def scatter(self, dcol: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        dcol = self._by_offset(dcol, b)
        with unbuffered_rows(self.grid(b)[-1], dcol.itemsize):
            for k in range(self.cv.kp):
                # For a fixed offset distinct outputs hit distinct cells, so += on the view is exact.
                index, length = self.tap(k, b)
                target[index] += dcol[:, k, ..., :length].swapaxes(0, 1)

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        a, e = self.cv.input_rows(b)
        if not any(self.cv.pads):  # no padded cells to drop: scatter straight into dx
            return dx[b.n0 : b.n1, :, a:e]
        return scratch.array("target", (b.n1 - b.n0, self.cv.c, e - a) + self.cv.padded[1:], zero=True)

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        """dx[block] += the part of a padded scatter target that lies inside x."""
        if any(self.cv.pads):
            inside, rows = self.cv.interior(self.cv.input_rows(b))
            _add_or_set(dx[b.n0 : b.n1, :, rows], target[(slice(None), slice(None)) + inside], self.cv.owns(b))

    def store(self, y: np.ndarray, b: _chunks.Block, out: np.ndarray) -> None:
        """y[block] = out, the GEMM's (O, columns)."""
        rows = out.reshape((out.shape[0], b.n1 - b.n0) + self.rows(b))[..., : self.cv.y[-1]]
        y[b.n0 : b.n1, :, b.r0 : b.r1] = rows.swapaxes(0, 1)

    def load(self, dy: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        """dy[block] as the GEMM's (O, columns), garbage columns zero."""
        part = dy[b.n0 : b.n1, :, b.r0 : b.r1].swapaxes(0, 1)
        garbage = self.width != self.cv.y[-1]
        out = scratch.array("dy", (part.shape[0], b.n1 - b.n0) + self.rows(b), zero=garbage)
        out[..., : self.cv.y[-1]] = part
        return out.reshape(part.shape[0], -1)


def _add_or_set(dst: np.ndarray, src: np.ndarray, owned: bool) -> None:
    """dst += src, or dst[...] = src where dst is still all zero and only this block writes it
    (a strided copy costs 2-4x less than a strided add)."""
    if owned:
        dst[...] = src
    else:
        dst += src


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

    def source(self, x: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        return _merge_last_two(super().source(x, b, scratch))

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        cv = self.cv
        offset = cv.offsets[k]
        grid = self.grid(b)
        a, e = cv.input_rows(b)
        plane = ((e - a) if cv.d == 2 else cv.padded[-2]) * self.width
        start = offset[-2] * self.width + offset[-1]
        # The last row's garbage tail may run past the plane: cut it (gather zeroes it).
        length = min(grid[-1], plane - start)
        outer = offset_slices(offset[:-2], cv.stride[:-2], grid[:-1])
        return outer + (slice(start, start + length),), length

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        return _merge_last_two(super().scatter_target(dx, b, scratch), view=True)

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        planes = target.shape[:-1] + (target.shape[-1] // self.width, self.width)
        super().add_back(dx, target.reshape(planes), b)

    def zero_garbage(self, col: np.ndarray, b: _chunks.Block) -> None:
        """Zero the garbage columns of gathered columns (C, K, columns)."""
        rows = col.reshape((self.cv.c, self.cv.kp, b.n1 - b.n0) + self.rows(b))
        rows[..., self.cv.y[-1] :] = 0


class Phased(Wide):
    """Wide rows for strided planes: the padded input block is split into its stride phases.

    Along a plane axis with stride s, padded cell s*t + a is cell t of phase a, and a kernel
    offset o reads phase o % s from cell o // s on, with step 1. So with each phase the offsets
    use stored as its own (rows, width) plane, width = ceil(padded width / s), an offset's taps
    over the block are one contiguous run per (item, channel), as in Wide: the strided accesses
    happen once per block, building the phases (gathers) or adding them into dx (scatters),
    instead of once per kernel offset.
    """

    def __init__(self, cv: ConvShape):
        Narrow.__init__(self, cv)
        self.phases = cv.stride[-2:]
        self.width = -(-cv.padded[-1] // self.phases[1])
        # The (row, column) phases some offset reads, each with its slot in the phase axis.
        used = sorted({(o[-2] % self.phases[0], o[-1] % self.phases[1]) for o in cv.offsets})
        self.slot = {phase: i for i, phase in enumerate(used)}

    @staticmethod
    def fits(cv: ConvShape) -> bool:
        return cv.d >= 2

    def _plane_rows(self, b: _chunks.Block) -> int:
        """Rows of each phase plane: ceil(padded rows / stride)."""
        cv = self.cv
        a, e = cv.input_rows(b)
        return -(-((e - a) if cv.d == 2 else cv.padded[-2]) // self.phases[0])

    def _phased(self, b: _chunks.Block, scratch: Scratch, purpose: str) -> np.ndarray:
        """Zeroed (items, C, *outer rows, phases, plane) scratch for block b."""
        a, e = self.cv.input_rows(b)
        outer = (e - a,) + self.cv.padded[1:-2] if self.cv.d > 2 else ()
        shape = (b.n1 - b.n0, self.cv.c) + outer + (len(self.slot), self._plane_rows(b) * self.width)
        return scratch.array(purpose, shape, zero=True)

    def _planes(self, phased: np.ndarray, b: _chunks.Block) -> np.ndarray:
        return phased.reshape(phased.shape[:-1] + (self._plane_rows(b), self.width))

    def source(self, x: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        block = Narrow.source(self, x, b, scratch)  # padded (a view of x where nothing is padded)
        out = self._phased(b, scratch, "phases")
        planes = self._planes(out, b)
        (sh, sw) = self.phases
        for (ah, aw), i in self.slot.items():
            part = block[..., ah::sh, aw::sw]
            planes[..., i, : part.shape[-2], : part.shape[-1]] = part
        return out

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        cv = self.cv
        offset = cv.offsets[k]
        grid = self.grid(b)
        (qh, ah), (qw, aw) = divmod(offset[-2], self.phases[0]), divmod(offset[-1], self.phases[1])
        start = qh * self.width + qw
        # The last row's garbage tail may run past the plane: cut it (gather zeroes it).
        length = min(grid[-1], self._plane_rows(b) * self.width - start)
        outer = offset_slices(offset[:-2], cv.stride[:-2], grid[:-1])
        return outer + (self.slot[ah, aw], slice(start, start + length)), length

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        return self._phased(b, scratch, "target")

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        """dx[block] += every phase's cells that lie inside x (strided adds, one per phase)."""
        inside, rows = self.cv.interior(self.cv.input_rows(b))
        planes = self._planes(target, b)
        dx_block = dx[b.n0 : b.n1, :, rows]
        for (ah, aw), i in self.slot.items():
            src, dst = [], []
            for a, s, cells in zip((ah, aw), self.phases, inside[-2:]):
                t0 = max(0, -(-(cells.start - a) // s))  # first phase cell at or after the interior
                t1 = -(-(cells.stop - a) // s)
                if t1 <= t0:
                    break
                first = a + s * t0 - cells.start  # its position inside x
                src.append(slice(t0, t1))
                dst.append(slice(first, first + s * (t1 - t0 - 1) + 1, s))
            else:
                outer = (slice(None), slice(None)) + inside[:-2]
                part = dx_block[(slice(None), slice(None)) + (slice(None),) * len(inside[:-2]) + tuple(dst)]
                _add_or_set(part, planes[outer + (i,) + tuple(src)], self.cv.owns(b))  # phases are disjoint


class BatchLast(Narrow):
    """Columns ordered (*Y, item): the block's items are the innermost axis everywhere."""

    @staticmethod
    def fits(cv: ConvShape) -> bool:
        return cv.stride[-1] == 1

    def grid(self, b: _chunks.Block) -> tuple[int, ...]:
        items = b.n1 - b.n0
        return (b.r1 - b.r0,) + self.cv.y[1:-1] + (self.cv.y[-1] * items,) if self.cv.d > 1 else ((b.r1 - b.r0) * items,)

    def columns(self, b: _chunks.Block) -> int:
        return math.prod(self.grid(b))

    def _padded_block(self, b: _chunks.Block) -> tuple[int, ...]:
        a, e = self.cv.input_rows(b)
        return (self.cv.c, e - a) + self.cv.padded[1:] + (b.n1 - b.n0,)

    def source(self, x: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        out = scratch.array("source", self._padded_block(b), zero=True)
        inside, rows = self.cv.interior(self.cv.input_rows(b))
        out[(slice(None),) + inside] = np.moveaxis(x[b.n0 : b.n1, :, rows], 0, -1)
        return _merge_last_two(out)

    def tap(self, k: int, b: _chunks.Block) -> tuple[tuple, int]:
        cv, items = self.cv, b.n1 - b.n0
        offset, grid = cv.offsets[k], self.grid(b)
        outer = offset_slices(offset[:-1], cv.stride[:-1], grid[:-1])[1:]  # (C, *outer axes)
        return outer + (slice(offset[-1] * items, offset[-1] * items + grid[-1]),), grid[-1]

    def _by_offset(self, flat: np.ndarray, b: _chunks.Block) -> np.ndarray:
        return flat.reshape((self.cv.c, self.cv.kp) + self.grid(b))

    def gather(self, src: np.ndarray, col: np.ndarray, b: _chunks.Block) -> None:
        col = self._by_offset(col, b)
        for k in range(self.cv.kp):
            col[:, k] = src[self.tap(k, b)[0]]

    def scatter(self, dcol: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        dcol = self._by_offset(dcol, b)
        with unbuffered_rows(self.grid(b)[-1], dcol.itemsize):
            for k in range(self.cv.kp):
                target[self.tap(k, b)[0]] += dcol[:, k]  # distinct outputs hit distinct cells

    def scatter_target(self, dx: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        return _merge_last_two(scratch.array("target", self._padded_block(b), zero=True))

    def add_back(self, dx: np.ndarray, target: np.ndarray, b: _chunks.Block) -> None:
        inside, rows = self.cv.interior(self.cv.input_rows(b))
        cells = target.reshape(self._padded_block(b))[(slice(None),) + inside]
        _add_or_set(dx[b.n0 : b.n1, :, rows], np.moveaxis(cells, -1, 0), self.cv.owns(b))

    def store(self, y: np.ndarray, b: _chunks.Block, out: np.ndarray) -> None:
        shaped = out.reshape((out.shape[0], b.r1 - b.r0) + self.cv.y[1:] + (b.n1 - b.n0,))
        y[b.n0 : b.n1, :, b.r0 : b.r1] = np.moveaxis(shaped, -1, 0)

    def load(self, dy: np.ndarray, b: _chunks.Block, scratch: Scratch) -> np.ndarray:
        part = np.moveaxis(dy[b.n0 : b.n1, :, b.r0 : b.r1], 0, -1)
        out = scratch.array("dy", part.shape)
        out[...] = part
        return out.reshape(part.shape[0], -1)


def choose(cv: ConvShape, *, scatter: bool):
    """The layout this call's shapes favour (estimates from measurements on 2-core OpenBLAS).

    BatchLast saves ROW_NS per row for (items - 1) of every item's rows, and costs TRANSPOSE_NS
    per element of the input and output it transposes. Wide pays off only for scatters (adds are
    what NumPy does worst on short rows) whose garbage costs few GEMM multiply-adds; gathers are
    memory-bound and gain nothing from it. Phased replaces Narrow's strided taps for scatters at
    any stride and for gathers at large strides, where little garbage comes with it.
    """
    rows = cv.c * cv.kp * math.prod(cv.y[:-1])  # per item: the narrow layout's row count
    transposed = (cv.n * cv.c * math.prod(cv.x)) + (cv.n * cv.o * math.prod(cv.y))
    if BatchLast.fits(cv) and ROW_NS * rows * (cv.n - 1) > TRANSPOSE_NS * transposed:
        return BatchLast(cv)
    if scatter and Wide.fits(cv) and (cv.padded[-1] - cv.y[-1]) * cv.og <= WIDE_GARBAGE_MACS * cv.y[-1]:
        return Wide(cv)
    # Phases pay where the narrow layout's strided accesses cost most: for scatters (adds) at any
    # stride, for gathers (copies) only at large strides, whose taps use little of each cache line.
    if Phased.fits(cv) and max(cv.stride[-2:]) > 1 and (scatter or min(cv.stride[-2:]) >= PHASED_GATHER_STRIDE):
        phased = Phased(cv)
        if (phased.width - cv.y[-1]) * MAX_GARBAGE_SHARE_INV <= cv.y[-1]:
            return phased
    return Narrow(cv)


# Measured against Narrow for gathers: AlexNet's stem (stride 4) 0.93-0.98x, stride 2 (3x3 and
# 1x1 kernels) 0.95-1.09x: no gain there.
PHASED_GATHER_STRIDE = 3
ROW_NS = 20.0  # NumPy's cost per contiguous row of a strided copy or add
TRANSPOSE_NS = 3.0  # per element of an element-by-element transposing copy
MAX_GARBAGE_SHARE_INV = 16  # Phased: at most 1 garbage column per 16 real ones
# Wide scatters: at most this many extra GEMM multiply-adds (garbage share x O per group) per
# real column element. A garbage column costs O MACs (~0.02 ns each); the long rows save the
# narrow layout's ~1 ns per element of adds over short rows. LeNet's first layer (1/6 garbage,
# O = 20): conv4x 0.81-0.83x with Wide; ResNet's 14x14 (1/7, O = 256): 1.03-1.23x.
WIDE_GARBAGE_MACS = 8
