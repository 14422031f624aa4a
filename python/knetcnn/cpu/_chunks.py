"""How much of a convolution to do at once: blocks of batch items, or of output rows.

The im2col buffer of a whole call can be many times larger than its result (C*prod(kernel) values
per output position), so the work is cut into blocks. A block is a range of batch items (whole
images) or, when one image alone is too big, a range of rows along the first spatial output axis,
or, when one row alone is past the budget, a range along the next axis, and so on.
Blocks are sized for speed (a buffer that stays near the caches' reach) and never exceed the memory
budget: a few times the call's result, or 256 MiB, whichever is larger.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple

MIB = 1 << 20
# Hard ceiling on scratch per block: max(this, RESULT_FACTOR * result bytes).
MIN_BUDGET_BYTES = 256 * MIB
RESULT_FACTOR = 2
# Preferred scratch per block: big enough that BLAS sees large matrices, small enough that the
# gather, the product and the scatter of one block reuse what is still in cache. With the compiled
# gathers, 4 MiB beat 24 MiB by 5-25% on LeNet-2, VGG and AlexNet (conv.py adds a floor in GEMM
# columns for shapes like ResNet's); 2 MiB lost 10-30% on LeNet, 8 MiB was a tie.
TARGET_BYTES = 4 * MIB


class Block(NamedTuple):
    n0: int  # batch items n0..n1-1
    n1: int
    box: tuple[tuple[int, int], ...]  # output positions [begin, end) along each spatial axis


def budget(result_bytes: int) -> int:
    return max(MIN_BUDGET_BYTES, RESULT_FACTOR * result_bytes)


def plan(
    batch: int, shape: tuple[int, ...], bytes_per_position: int, result_bytes: int, target: int | None = None
) -> Iterator[Block]:
    """Blocks covering batch x shape (the output's spatial shape), each needing about
    bytes_per_position scratch per output position it holds."""
    target = TARGET_BYTES if target is None else target  # read per call: tests and tuning patch it
    per_item = bytes_per_position * math.prod(shape)
    limit = _limit(bytes_per_position * math.prod(shape[1:]), target, result_bytes)
    if per_item <= limit:
        for n0, n1 in _even(batch, limit // max(per_item, 1)):
            yield Block(n0, n1, tuple((0, size) for size in shape))
        return
    for n in range(batch):
        for box in _boxes(shape, bytes_per_position, result_bytes, target):
            yield Block(n, n + 1, box)


def _limit(unit_bytes: int, target: int, result_bytes: int) -> int:
    """Scratch per block, cutting units of unit_bytes: the target, but never less than one unit
    unless that is past the budget."""
    return min(max(target, unit_bytes), budget(result_bytes))


def _boxes(shape: tuple[int, ...], bytes_per_position: int, result_bytes: int, target: int):
    """Boxes covering one item: ranges along the first axis, each cut along the next axis where
    one slice alone is past the budget."""
    per_slice = bytes_per_position * math.prod(shape[1:])
    limit = _limit(per_slice, target, result_bytes)
    if per_slice <= limit or len(shape) == 1:
        rest = tuple((0, size) for size in shape[1:])
        for begin, end in _even(shape[0], limit // max(per_slice, 1)):
            yield ((begin, end),) + rest
        return
    for i in range(shape[0]):
        for inner in _boxes(shape[1:], bytes_per_position, result_bytes, target):
            yield ((i, i + 1),) + inner


def _even(total: int, most: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges covering 0..total, at most max(most, 1) long, evened out so the last
    one is not a sliver."""
    step = max(1, min(total, most))
    step = -(-total // -(-total // step)) if total else 1
    for start in range(0, total, step):
        yield start, min(start + step, total)


# Pooling converts input the kernels cannot read in place (float16, strided, misaligned,
# byte-swapped) in blocks of (batch, channel) planes about this big, or bands of one plane's rows
# where a plane is bigger, so the converted copies stay bounded (aligned C-contiguous
# float32/float64 input goes to the kernels whole, unblocked).
POOL_BLOCK_BYTES = 2 << 20


def channel_blocks(batch: int, channels: int, bytes_per_channel: int, target: int | None = None):
    """(batch slice, channel slice) pairs covering batch x channels, each about `target` bytes."""
    target = POOL_BLOCK_BYTES if target is None else target
    per_item = bytes_per_channel * channels
    if per_item <= target:
        items = max(1, target // max(per_item, 1))
        for n0 in range(0, batch, items):
            yield slice(n0, min(n0 + items, batch)), slice(0, channels)
        return
    step = max(1, target // max(bytes_per_channel, 1))
    for n in range(batch):
        for c0 in range(0, channels, step):
            yield slice(n, n + 1), slice(c0, min(c0 + step, channels))
