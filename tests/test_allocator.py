"""The allocator model against PyTorch's caching-allocator rules, and its accounting."""

from __future__ import annotations

import random

import pytest

from memlens._errors import ConfigError
from memlens.allocator import CachingAllocator, replay, round_size, segment_size
from memlens.categories import Category, Phase
from memlens.timeline import ALLOC, Timeline

KiB, MiB = 1024, 1024 * 1024


def alloc(t: Timeline, nbytes: int) -> int:
    return t.alloc(nbytes, Category.ACTIVATIONS, Phase.FORWARD, "", "aten.empty")


def timeline(*sizes: int) -> tuple[Timeline, list[int]]:
    t = Timeline()
    return t, [alloc(t, n) for n in sizes]


@pytest.mark.parametrize(
    ("nbytes", "rounded"), [(1, 512), (511, 512), (512, 512), (513, 1024), (MiB + 1, MiB + 512)]
)
def test_round_size(nbytes: int, rounded: int) -> None:
    assert round_size(nbytes) == rounded
    t, (a,) = timeline(nbytes)
    assert replay(t, "cuda-caching").sizes[a] == rounded


@pytest.mark.parametrize(
    ("size", "segment"),
    [(512, 2 * MiB), (MiB, 2 * MiB), (MiB + 512, 20 * MiB), (10 * MiB - 512, 20 * MiB),
     (10 * MiB, 10 * MiB), (25 * MiB, 26 * MiB)],
)  # fmt: skip
def test_segment_size(size: int, segment: int) -> None:
    assert segment_size(size) == segment


def test_small_requests_share_a_2mib_segment() -> None:
    t, (a, b) = timeline(600 * KiB, 600 * KiB)
    r = replay(t, "cuda-caching")
    assert (r.segments, r.peak_reserved, r.peak_allocated) == (1, 2 * MiB, 1200 * KiB)
    assert r.sizes == {a: 600 * KiB, b: 600 * KiB}


def test_reuse_after_free_needs_no_new_segment() -> None:
    t, (a,) = timeline(5 * MiB)
    t.free(a)
    alloc(t, 5 * MiB)
    r = replay(t, "cuda-caching")
    assert (r.segments, r.reserved[-1], r.allocated) == (1, 20 * MiB, [5 * MiB, 0, 5 * MiB])


def test_5mib_request_reserves_a_20mib_segment() -> None:
    t, _ = timeline(5 * MiB)
    r = replay(t, "cuda-caching")
    assert (r.allocated, r.reserved, r.segments) == ([5 * MiB], [20 * MiB], 1)


def test_25mib_request_reserves_26mib() -> None:
    t, _ = timeline(25 * MiB)
    r = replay(t, "cuda-caching")
    # the 1 MiB remainder is not > 1 MiB, so it is not split off: all 26 MiB are allocated
    assert (r.allocated, r.reserved) == ([26 * MiB], [26 * MiB])


def test_split_blocks_merge_back_when_freed() -> None:
    t, (a, b) = timeline(5 * MiB, 5 * MiB)  # both split from one 20 MiB segment
    t.free(a)
    t.free(b)
    alloc(t, 18 * MiB)  # fits only if the three free pieces merged back into 20 MiB
    r = replay(t, "cuda-caching")
    assert r.segments == 1
    assert r.allocated == [5 * MiB, 10 * MiB, 5 * MiB, 0, 18 * MiB]


def test_free_block_between_live_ones_is_reused() -> None:
    t, (a, b, c) = timeline(300 * KiB, 300 * KiB, 300 * KiB)
    t.free(b)
    alloc(t, 200 * KiB)  # best fit: the 300 KiB hole, not the 1148 KiB tail
    alloc(t, 1000 * KiB)  # so the tail still has room for this
    r = replay(t, "cuda-caching")
    assert (r.segments, r.reserved[-1]) == (1, 2 * MiB)


def test_unsplit_remainder_counts_as_allocated() -> None:
    # 11.5 MiB gets a 12 MiB segment; the 0.5 MiB left is <= 1 MiB, so not split off.
    t, (a,) = timeline(11 * MiB + 512 * KiB)
    t.free(a)
    alloc(t, 11 * MiB)  # reuses the whole 12 MiB block: 1 MiB remainder is not > 1 MiB
    r = replay(t, "cuda-caching")
    assert r.sizes[a] == 12 * MiB
    assert r.allocated == [12 * MiB, 0, 12 * MiB]
    assert r.reserved == [12 * MiB] * 3


def test_best_fit_picks_the_smallest_free_block() -> None:
    t, (a, b) = timeline(30 * MiB, 24 * MiB)  # segments of 30 and 24 MiB
    t.free(a)
    t.free(b)
    small = alloc(t, 23 * MiB)
    big = alloc(t, 29 * MiB)
    r = replay(t, "cuda-caching")
    assert (r.segments, r.sizes[small], r.sizes[big]) == (2, 24 * MiB, 30 * MiB)


def test_small_and_large_pools_are_separate() -> None:
    t, (a,) = timeline(12 * MiB)
    t.free(a)
    alloc(t, 4 * KiB)  # a small request never takes a large-pool block
    r = replay(t, "cuda-caching")
    assert (r.segments, r.reserved[-1]) == (2, 14 * MiB)


def test_zero_byte_blocks_take_no_memory() -> None:
    t, (a, b) = timeline(0, 1)
    t.free(a)
    r = replay(t, "cuda-caching")
    assert r.sizes == {a: 0, b: 512}
    assert r.allocated == [0, 512, 512]
    assert r.segments == 1


def test_cpu_is_exact() -> None:
    t, (a, b) = timeline(1, 25 * MiB + 3)
    t.free(a)
    r = replay(t, "exact")
    assert r.allocated == r.reserved == [1, 25 * MiB + 4, 25 * MiB + 3] == t.curve()
    assert (r.sizes, r.peak_allocated, r.peak_index, r.segments) == (
        {a: 1, b: 25 * MiB + 3}, 25 * MiB + 4, 1, 0
    )  # fmt: skip


def test_peak_index_is_the_first_peak() -> None:
    t, (a,) = timeline(4 * KiB)
    t.free(a)
    alloc(t, 4 * KiB)
    r = replay(t, "cuda-caching")
    assert (r.peak_allocated, r.peak_index, r.peak_reserved) == (4 * KiB, 0, 2 * MiB)


def test_empty_timeline() -> None:
    r = replay(Timeline(), "cuda-caching")
    assert (r.allocated, r.peak_allocated, r.peak_index, r.segments) == ([], 0, -1, 0)


def test_unknown_allocator_model_and_bad_free_are_refused() -> None:
    t, (a,) = timeline(8)
    with pytest.raises(ConfigError, match="exact, cuda-caching"):
        replay(t, "cuda")
    t.free(a)
    t.free(a)
    with pytest.raises(ValueError, match="block 0"):
        replay(t, "cuda-caching")


def test_a_mixed_sequence_worked_out_by_hand() -> None:
    """Small and large pools, splits, merges and best fit over one sequence, every handle
    ``(segment, offset, size)`` worked out by hand from CUDACachingAllocator.cpp (default
    configuration): ``round_size`` to 512 B; ``get_allocation_size``: 2 MiB segments up to
    1 MiB, 20 MiB below 10 MiB, else rounded up to 2 MiB; ``get_free_block``: the smallest
    free block of the request's pool that fits; ``should_split``: small pool if the rest is
    >= 512 B, large pool if it is > 1 MiB; ``free_block``: merge with free neighbours."""
    alloc = CachingAllocator()
    # small pool: a new 2 MiB segment 0, split, then carved further
    a = alloc.malloc(700 * KiB)
    assert a == (0, 0, 700 * KiB)  # free: 1348 KiB at 700 KiB
    b = alloc.malloc(1000)  # rounded to 1 KiB
    assert b == (0, 700 * KiB, KiB)  # free: 1347 KiB at 701 KiB
    c = alloc.malloc(MiB)  # 1 MiB is still a small request
    assert c == (0, 701 * KiB, MiB)  # free: 323 KiB at 1725 KiB
    d = alloc.malloc(400 * KiB)  # 323 KiB is too small: a second 2 MiB segment
    assert d == (1, 0, 400 * KiB)  # free: 1648 KiB at 400 KiB of segment 1
    alloc.free(b)  # between a and c, both in use: a free block of 1 KiB
    e = alloc.malloc(300 * KiB)  # best fit: 323 KiB, not 1648 KiB
    assert e == (0, 1725 * KiB, 300 * KiB)  # free: 23 KiB at 2025 KiB
    alloc.free(a)  # merges with b's free 1 KiB: 701 KiB at 0
    f = alloc.malloc(650 * KiB)  # best fit: the merged 701 KiB
    assert f == (0, 0, 650 * KiB)  # free: 51 KiB at 650 KiB
    assert (alloc.allocated, alloc.reserved) == ((1024 + 400 + 300 + 650) * KiB, 4 * MiB)
    # large pool: 20 MiB segments below 10 MiB, 2 MiB multiples from 10 MiB
    g = alloc.malloc(3 * MiB)
    assert g == (2, 0, 3 * MiB)  # free: 17 MiB at 3 MiB
    h = alloc.malloc(16 * MiB + 512 * KiB)  # the 512 KiB left is not > 1 MiB: no split
    assert h == (2, 3 * MiB, 17 * MiB)
    i = alloc.malloc(12 * MiB + 1)  # rounded to 12 MiB + 512 B, in a new 14 MiB segment
    assert i == (3, 0, 12 * MiB + 512)  # free: 2 MiB - 512 B at 12 MiB + 512 B
    alloc.free(g)  # h is in use: 3 MiB free at 0 of segment 2
    j = alloc.malloc(1500 * KiB)  # best fit: 2 MiB - 512 B; 547.5 KiB left: no split
    assert j == (3, 12 * MiB + 512, 2 * MiB - 512)
    k = alloc.malloc(4 * KiB)  # small: never the 3 MiB large block; best fit 23 KiB
    assert k == (0, 2025 * KiB, 4 * KiB)
    alloc.free(h)  # merges with g's 3 MiB: segment 2 is one free 20 MiB block
    m = alloc.malloc(19 * MiB)  # reuses it whole (1 MiB left is not > 1 MiB)
    assert m == (2, 0, 20 * MiB)
    assert alloc.segment_sizes == [2 * MiB, 2 * MiB, 20 * MiB, 14 * MiB]
    assert alloc.allocated == (1024 + 400 + 300 + 650 + 4) * KiB + 14 * MiB + 20 * MiB
    assert alloc.reserved - alloc.allocated == alloc.cached


def test_replay_keeps_its_identities_on_random_traffic() -> None:
    rng = random.Random(1)
    t, live = Timeline(), []
    while len(t.events) < 20_000:
        if live and rng.random() < 0.5:
            t.free(live.pop(rng.randrange(len(live))))
        else:
            live.append(alloc(t, rng.choice([rng.randint(1, MiB), rng.randint(1, 64 * MiB)])))
    r = replay(t, "cuda-caching")
    assert all(a <= res for a, res in zip(r.allocated, r.reserved, strict=True))
    running = 0
    for (block_id, sign), allocated in zip(t.events, r.allocated, strict=True):
        running += r.sizes[block_id] if sign == ALLOC else -r.sizes[block_id]
        assert running == allocated
    assert r.peak_allocated == r.allocated[r.peak_index] == max(r.allocated)
