"""Replay a :class:`~memlens.timeline.Timeline` under a target's allocator model
(:attr:`memlens.targets.Target.allocator`)."""

from __future__ import annotations

from dataclasses import dataclass

from memlens._errors import ConfigError
from memlens.allocator._cuda import CachingAllocator
from memlens.timeline import ALLOC, Timeline

#: Allocator models: ``exact`` (every request is its own allocation, as PyTorch's CPU
#: allocator does) and ``cuda-caching`` (:class:`CachingAllocator`).
MODELS = ("exact", "cuda-caching")


@dataclass
class AllocatorResult:
    """Allocated and reserved bytes after each event of a timeline, as one allocator sees them."""

    model: str  # the allocator model: "exact" or "cuda-caching"
    sizes: dict[int, int]  # block id -> bytes as the allocator accounts it
    allocated: list[int]  # allocated bytes after each event
    reserved: list[int]  # reserved bytes after each event (exact: == allocated)
    peak_allocated: int
    peak_index: int  # event index of the first allocated peak; -1 for an empty timeline
    peak_reserved: int
    segments: int  # segments (cudaMalloc calls) held at the end (exact: 0)


def replay(timeline: Timeline, allocator: str) -> AllocatorResult:
    """Replay ``timeline`` under ``"exact"`` (sizes as requested, no caching) or
    ``"cuda-caching"`` (PyTorch's CUDA caching allocator).

    CUDA sizes are whole blocks: a request rounded up to 512 bytes, or the entire cached block
    when its remainder is too small to split off, which is what ``memory_allocated`` counts.
    """
    if allocator == "exact":
        sizes = {b.id: b.nbytes for b in timeline.blocks}
        allocated = timeline.curve()
        return _result(allocator, sizes, allocated, list(allocated), 0)
    if allocator != "cuda-caching":
        raise ConfigError(f"no allocator model {allocator!r}: use one of {', '.join(MODELS)}")

    alloc = CachingAllocator()
    live: dict[int, tuple[int, int, int] | None] = {}  # block id -> handle (None: zero bytes)
    sizes: dict[int, int] = {}
    allocated: list[int] = []
    reserved: list[int] = []
    live_bytes = 0
    for index, (block_id, sign) in enumerate(timeline.events):
        if sign == ALLOC:
            nbytes = timeline.blocks[block_id].nbytes
            handle = alloc.malloc(nbytes) if nbytes > 0 else None
            live[block_id] = handle
            sizes[block_id] = handle[2] if handle else 0
            live_bytes += sizes[block_id]
        else:
            if block_id not in live:
                raise ValueError(f"event {index}: block {block_id} is freed but not live")
            handle = live.pop(block_id)
            if handle:
                alloc.free(handle)
            live_bytes -= sizes[block_id]
        assert live_bytes == alloc.allocated <= alloc.reserved == alloc.allocated + alloc.cached
        allocated.append(alloc.allocated)
        reserved.append(alloc.reserved)
    assert alloc.reserved == sum(alloc.segment_sizes)
    return _result(allocator, sizes, allocated, reserved, len(alloc.segment_sizes))


def _result(
    allocator: str, sizes: dict[int, int], allocated: list[int], reserved: list[int], segments: int
) -> AllocatorResult:
    peak = max(allocated, default=0)
    return AllocatorResult(
        model=allocator,
        sizes=sizes,
        allocated=allocated,
        reserved=reserved,
        peak_allocated=peak,
        peak_index=allocated.index(peak) if allocated else -1,
        peak_reserved=max(reserved, default=0),
        segments=segments,
    )
