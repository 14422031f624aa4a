"""How much of a convolution to do at once: blocks of batch items, or of output rows.

The im2col buffer of a whole call can be many times larger than its result (C*prod(kernel) values
per output position), so the work is cut into blocks. A block is a range of batch items (whole
images) or, when one image alone is too big, a range of rows along the first spatial output axis.
Blocks are sized for speed (a buffer that stays near the caches' reach) and never exceed the memory
budget: a few times the call's result, or 256 MiB, whichever is larger.
"""

from __future__ import annotations

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
    r0: int  # output rows r0..r1-1 along the first spatial axis
    r1: int


def budget(result_bytes: int) -> int:
    return max(MIN_BUDGET_BYTES, RESULT_FACTOR * result_bytes)


def plan(batch: int, rows: int, bytes_per_row: int, result_bytes: int, target: int | None = None) -> Iterator[Block]:
    """Blocks covering batch x rows, each needing about bytes_per_row * (items * rows) scratch."""
    target = TARGET_BYTES if target is None else target  # read per call: tests and tuning patch it
    limit = min(max(target, bytes_per_row), budget(result_bytes))
    per_item = bytes_per_row * rows
    if per_item <= limit:
        items = max(1, min(batch, limit // max(per_item, 1)))
        # Even out the blocks so the last one is not a sliver.
        count = -(-batch // items)
        items = -(-batch // count)
        for n0 in range(0, batch, items):
            yield Block(n0, min(n0 + items, batch), 0, rows)
        return
    rows_per_block = max(1, limit // max(bytes_per_row, 1))
    count = -(-rows // rows_per_block)
    rows_per_block = -(-rows // count)
    for n in range(batch):
        for r0 in range(0, rows, rows_per_block):
            yield Block(n, n + 1, r0, min(r0 + rows_per_block, rows))


# Pooling converts input the kernels cannot read in place (float16, strided, misaligned) in
# blocks of (batch, channel) planes about this big, so the converted copies stay bounded
# (aligned C-contiguous float32/float64 input goes to the kernels whole, unblocked).
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
