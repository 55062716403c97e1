"""Allocator models: what a device's allocator reserves for a :class:`~memlens.timeline.Timeline`.

:func:`replay` turns a timeline into allocated and reserved curves under a target's allocator
model: ``exact`` (the CPU) or ``cuda-caching``, PyTorch's CUDA caching allocator rules
(:class:`CachingAllocator`; ROCm builds hipify the same allocator).
"""

from memlens.allocator._cuda import CachingAllocator, round_size, segment_size
from memlens.allocator._replay import AllocatorResult, replay

__all__ = ["AllocatorResult", "CachingAllocator", "replay", "round_size", "segment_size"]
