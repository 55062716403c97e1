"""Allocator models: what a device's allocator reserves for a :class:`~memlens.timeline.Timeline`.

:func:`replay` turns a timeline into allocated and reserved curves: exact on the CPU, and under
PyTorch's CUDA caching allocator rules (:class:`CachingAllocator`) on a GPU.
"""

from memlens.allocator._cuda import CachingAllocator, round_size, segment_size
from memlens.allocator._replay import AllocatorResult, replay

__all__ = ["AllocatorResult", "CachingAllocator", "replay", "round_size", "segment_size"]
