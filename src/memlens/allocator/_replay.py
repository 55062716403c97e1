"""Replay a :class:`~memlens.timeline.Timeline` under a device's allocator rules."""

from __future__ import annotations

from dataclasses import dataclass

from memlens._errors import ConfigError
from memlens.allocator._cuda import CachingAllocator
from memlens.timeline import ALLOC, Timeline

DEVICES = ("cpu", "cuda")


@dataclass
class AllocatorResult:
    """Allocated and reserved bytes after each event of a timeline, as one allocator sees them."""

    device: str  # "cpu" or "cuda"
    sizes: dict[int, int]  # block id -> bytes as the allocator accounts it
    allocated: list[int]  # allocated bytes after each event
    reserved: list[int]  # reserved bytes after each event (cpu: == allocated)
    peak_allocated: int
    peak_index: int  # event index of the first allocated peak; -1 for an empty timeline
    peak_reserved: int
    segments: int  # segments (cudaMalloc calls) held at the end (cpu: 0)


def replay(timeline: Timeline, device: str) -> AllocatorResult:
    """Replay ``timeline`` on ``"cpu"`` (exact sizes, no caching) or ``"cuda"`` (caching allocator).

    CUDA sizes are whole blocks: a request rounded up to 512 bytes, or the entire cached block
    when its remainder is too small to split off, which is what ``memory_allocated`` counts.
    """
    if device == "cpu":
        sizes = {b.id: b.nbytes for b in timeline.blocks}
        allocated = timeline.curve()
        return _result(device, sizes, allocated, list(allocated), 0)
    if device != "cuda":
        raise ConfigError(f"cannot replay on device {device!r}: use one of {', '.join(DEVICES)}")

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
    return _result(device, sizes, allocated, reserved, len(alloc.segment_sizes))


def _result(
    device: str, sizes: dict[int, int], allocated: list[int], reserved: list[int], segments: int
) -> AllocatorResult:
    peak = max(allocated, default=0)
    return AllocatorResult(
        device=device,
        sizes=sizes,
        allocated=allocated,
        reserved=reserved,
        peak_allocated=peak,
        peak_index=allocated.index(peak) if allocated else -1,
        peak_reserved=max(reserved, default=0),
        segments=segments,
    )
