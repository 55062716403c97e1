"""PyTorch's CUDA caching allocator, replayed on sizes alone.

:class:`CachingAllocator` mirrors ``DeviceCachingAllocator`` in
``c10/cuda/CUDACachingAllocator.cpp`` under the default configuration
(``PYTORCH_CUDA_ALLOC_CONF`` unset): requests are rounded up to 512 bytes; requests of at most
1 MiB are carved from 2 MiB segments of a small pool, larger ones from a large pool whose
segments are 20 MiB (requests under 10 MiB) or the request rounded up to 2 MiB; a request takes
the smallest cached free block that fits (best fit), splits it when the remainder is worth
keeping, and a freed block merges with its free neighbours. Segments are never given back.

Example usage::

    alloc = CachingAllocator()
    a = alloc.malloc(600 * 1024)  # (segment, offset, size): carved from a new 2 MiB segment
    b = alloc.malloc(600 * 1024)  # shares that segment
    alloc.free(a)
    assert (alloc.allocated, alloc.reserved) == (b[2], 2 * 2**20)

Known limitations:

- Segment addresses are unknown. Free blocks of equal size are taken in (segment creation,
  offset) order, standing in for the address order PyTorch uses to break such ties.
- One stream: no cross-stream reuse rules (``record_stream``), no CUDA-graph private pools.
- ``cudaMalloc`` never fails here, so the cache is never flushed to retry an allocation: near a
  device's capacity PyTorch may release cached segments and reserve less than this model says.
- Non-default settings (``max_split_size_mb``, ``roundup_power2_divisions``,
  ``expandable_segments``, ``garbage_collection_threshold``) are not modelled.
"""

from __future__ import annotations

from bisect import bisect_left, insort

# The revision of the allocator that the constants and rules below mirror, symbol by symbol.
_SRC = (
    "https://github.com/pytorch/pytorch/blob/001074d25084fdb87a799823e395a50f5ec044d3/"
    "c10/cuda/CUDACachingAllocator.cpp"
)

#: Every request is rounded up to a multiple of this (``kMinBlockSize``, ``round_size`` in _SRC)
MIN_BLOCK_SIZE = 512
#: Largest request served by the small pool (``kSmallSize``, ``get_pool`` in _SRC)
SMALL_SIZE = 1024 * 1024
#: Segment size of the small pool (``kSmallBuffer``, ``get_allocation_size`` in _SRC)
SMALL_BUFFER = 2 * 1024 * 1024
#: Large requests below this get a ``LARGE_BUFFER`` segment (``kMinLargeAlloc`` in _SRC)
MIN_LARGE_ALLOC = 10 * 1024 * 1024
#: Segment size for large requests below ``MIN_LARGE_ALLOC`` (``kLargeBuffer`` in _SRC)
LARGE_BUFFER = 20 * 1024 * 1024
#: Larger requests get a segment rounded up to a multiple of this (``kRoundLarge`` in _SRC)
ROUND_LARGE = 2 * 1024 * 1024


def round_size(nbytes: int) -> int:
    """Bytes a request of ``nbytes`` occupies (``round_size`` in _SRC; no power-of-2 rounding).

    ``roundup_power2_divisions`` is unset by default, so sizes go up to a multiple of 512 bytes.
    """
    if nbytes < MIN_BLOCK_SIZE:
        return MIN_BLOCK_SIZE
    return MIN_BLOCK_SIZE * -(-nbytes // MIN_BLOCK_SIZE)


def segment_size(size: int) -> int:
    """New segment for a rounded request that no free block fits (``get_allocation_size``)."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


def _should_split(small: bool, remaining: int) -> bool:
    """Whether a block's unused tail becomes a free block of its own (``should_split`` in _SRC).

    The large-pool rule also requires ``size < max_split_size``, which is unlimited by default.
    """
    return remaining >= MIN_BLOCK_SIZE if small else remaining > SMALL_SIZE


class CachingAllocator:
    """Segments, free blocks and byte counters of one device's caching allocator, one stream.

    A block is a handle ``(segment, offset, size)``. Free blocks live in one sorted list per
    pool, keyed ``(size, segment, offset)`` so that best fit is one ``bisect``, and in two maps
    (by start and by end) so that a freed block finds its free neighbours in O(1).
    """

    def __init__(self) -> None:
        self.allocated = 0  # bytes in allocated blocks (torch.cuda.memory_allocated)
        self.reserved = 0  # bytes in segments (torch.cuda.memory_reserved)
        self.cached = 0  # bytes in free blocks: always reserved - allocated
        self.segment_sizes: list[int] = []
        self._segment_small: list[bool] = []
        self._pools: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}
        self._free_at: dict[tuple[int, int], int] = {}  # (segment, offset) -> size
        self._free_end: dict[tuple[int, int], int] = {}  # (segment, offset + size) -> offset

    def malloc(self, nbytes: int) -> tuple[int, int, int]:
        """Allocate ``nbytes`` (> 0); returns the block ``(segment, offset, size)``."""
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self._pools[small]
        i = bisect_left(pool, (size,))
        if i < len(pool):
            block_size, segment, offset = pool[i]
            self._unlink(segment, offset, block_size)
            del pool[i]
        else:
            block_size, segment, offset = segment_size(size), len(self.segment_sizes), 0
            self.segment_sizes.append(block_size)
            self._segment_small.append(small)
            self.reserved += block_size
        if _should_split(small, block_size - size):
            self._insert(segment, offset + size, block_size - size)
            block_size = size
        self.allocated += block_size
        return segment, offset, block_size

    def free(self, block: tuple[int, int, int]) -> None:
        """Return a block to its pool, merged with the free blocks on either side."""
        segment, offset, size = block
        self.allocated -= size
        prev_offset = self._free_end.get((segment, offset))
        if prev_offset is not None:
            self._remove(segment, prev_offset, offset - prev_offset)
            offset, size = prev_offset, size + offset - prev_offset
        next_size = self._free_at.get((segment, offset + size))
        if next_size is not None:
            self._remove(segment, offset + size, next_size)
            size += next_size
        self._insert(segment, offset, size)

    def _insert(self, segment: int, offset: int, size: int) -> None:
        insort(self._pools[self._segment_small[segment]], (size, segment, offset))
        self._free_at[segment, offset] = size
        self._free_end[segment, offset + size] = offset
        self.cached += size

    def _remove(self, segment: int, offset: int, size: int) -> None:
        pool = self._pools[self._segment_small[segment]]
        del pool[bisect_left(pool, (size, segment, offset))]
        self._unlink(segment, offset, size)

    def _unlink(self, segment: int, offset: int, size: int) -> None:
        del self._free_at[segment, offset]
        del self._free_end[segment, offset + size]
        self.cached -= size
