"""The allocator model against PyTorch's caching-allocator rules, and its accounting."""

from __future__ import annotations

import random
import time

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
    assert replay(t, "cuda").sizes[a] == rounded


@pytest.mark.parametrize(
    ("size", "segment"),
    [(512, 2 * MiB), (MiB, 2 * MiB), (MiB + 512, 20 * MiB), (10 * MiB - 512, 20 * MiB),
     (10 * MiB, 10 * MiB), (25 * MiB, 26 * MiB)],
)  # fmt: skip
def test_segment_size(size: int, segment: int) -> None:
    assert segment_size(size) == segment


def test_small_requests_share_a_2mib_segment() -> None:
    t, (a, b) = timeline(600 * KiB, 600 * KiB)
    r = replay(t, "cuda")
    assert (r.segments, r.peak_reserved, r.peak_allocated) == (1, 2 * MiB, 1200 * KiB)
    assert r.sizes == {a: 600 * KiB, b: 600 * KiB}


def test_reuse_after_free_needs_no_new_segment() -> None:
    t, (a,) = timeline(5 * MiB)
    t.free(a)
    alloc(t, 5 * MiB)
    r = replay(t, "cuda")
    assert (r.segments, r.reserved[-1], r.allocated) == (1, 20 * MiB, [5 * MiB, 0, 5 * MiB])


def test_5mib_request_reserves_a_20mib_segment() -> None:
    t, _ = timeline(5 * MiB)
    r = replay(t, "cuda")
    assert (r.allocated, r.reserved, r.segments) == ([5 * MiB], [20 * MiB], 1)


def test_25mib_request_reserves_26mib() -> None:
    t, _ = timeline(25 * MiB)
    r = replay(t, "cuda")
    # the 1 MiB remainder is not > 1 MiB, so it is not split off: all 26 MiB are allocated
    assert (r.allocated, r.reserved) == ([26 * MiB], [26 * MiB])


def test_split_blocks_merge_back_when_freed() -> None:
    t, (a, b) = timeline(5 * MiB, 5 * MiB)  # both split from one 20 MiB segment
    t.free(a)
    t.free(b)
    alloc(t, 18 * MiB)  # fits only if the three free pieces merged back into 20 MiB
    r = replay(t, "cuda")
    assert r.segments == 1
    assert r.allocated == [5 * MiB, 10 * MiB, 5 * MiB, 0, 18 * MiB]


def test_free_block_between_live_ones_is_reused() -> None:
    t, (a, b, c) = timeline(300 * KiB, 300 * KiB, 300 * KiB)
    t.free(b)
    alloc(t, 200 * KiB)  # best fit: the 300 KiB hole, not the 1148 KiB tail
    alloc(t, 1000 * KiB)  # so the tail still has room for this
    r = replay(t, "cuda")
    assert (r.segments, r.reserved[-1]) == (1, 2 * MiB)


def test_unsplit_remainder_counts_as_allocated() -> None:
    # 11.5 MiB gets a 12 MiB segment; the 0.5 MiB left is <= 1 MiB, so not split off.
    t, (a,) = timeline(11 * MiB + 512 * KiB)
    t.free(a)
    alloc(t, 11 * MiB)  # reuses the whole 12 MiB block: 1 MiB remainder is not > 1 MiB
    r = replay(t, "cuda")
    assert r.sizes[a] == 12 * MiB
    assert r.allocated == [12 * MiB, 0, 12 * MiB]
    assert r.reserved == [12 * MiB] * 3


def test_best_fit_picks_the_smallest_free_block() -> None:
    t, (a, b) = timeline(30 * MiB, 24 * MiB)  # segments of 30 and 24 MiB
    t.free(a)
    t.free(b)
    small = alloc(t, 23 * MiB)
    big = alloc(t, 29 * MiB)
    r = replay(t, "cuda")
    assert (r.segments, r.sizes[small], r.sizes[big]) == (2, 24 * MiB, 30 * MiB)


def test_small_and_large_pools_are_separate() -> None:
    t, (a,) = timeline(12 * MiB)
    t.free(a)
    alloc(t, 4 * KiB)  # a small request never takes a large-pool block
    r = replay(t, "cuda")
    assert (r.segments, r.reserved[-1]) == (2, 14 * MiB)


def test_zero_byte_blocks_take_no_memory() -> None:
    t, (a, b) = timeline(0, 1)
    t.free(a)
    r = replay(t, "cuda")
    assert r.sizes == {a: 0, b: 512}
    assert r.allocated == [0, 512, 512]
    assert r.segments == 1


def test_cpu_is_exact() -> None:
    t, (a, b) = timeline(1, 25 * MiB + 3)
    t.free(a)
    r = replay(t, "cpu")
    assert r.allocated == r.reserved == [1, 25 * MiB + 4, 25 * MiB + 3] == t.curve()
    assert (r.sizes, r.peak_allocated, r.peak_index, r.segments) == (
        {a: 1, b: 25 * MiB + 3}, 25 * MiB + 4, 1, 0
    )  # fmt: skip


def test_peak_index_is_the_first_peak() -> None:
    t, (a,) = timeline(4 * KiB)
    t.free(a)
    alloc(t, 4 * KiB)
    r = replay(t, "cuda")
    assert (r.peak_allocated, r.peak_index, r.peak_reserved) == (4 * KiB, 0, 2 * MiB)


def test_empty_timeline() -> None:
    r = replay(Timeline(), "cuda")
    assert (r.allocated, r.peak_allocated, r.peak_index, r.segments) == ([], 0, -1, 0)


def test_bad_device_and_bad_free_are_refused() -> None:
    t, (a,) = timeline(8)
    with pytest.raises(ConfigError, match="cpu, cuda"):
        replay(t, "tpu")
    t.free(a)
    t.free(a)
    with pytest.raises(ValueError, match="block 0"):
        replay(t, "cuda")


class _Reference:
    """A slow, literal model of the same rules: segments as address-ordered block lists."""

    def __init__(self) -> None:
        self.segments: list[tuple[bool, list[list]]] = []  # (small, [[offset, size, used]])

    def malloc(self, nbytes: int) -> tuple[int, int, int]:
        size = round_size(nbytes)
        small = size <= MiB
        fits = [
            (blk[1], s, blk[0])
            for s, (seg_small, blocks) in enumerate(self.segments)
            if seg_small == small
            for blk in blocks
            if not blk[2] and blk[1] >= size
        ]
        if fits:
            _, s, offset = min(fits)
        else:
            s, offset = len(self.segments), 0
            self.segments.append((small, [[0, segment_size(size), False]]))
        blocks = self.segments[s][1]
        i = next(i for i, blk in enumerate(blocks) if blk[0] == offset)
        remaining = blocks[i][1] - size
        if remaining >= 512 if small else remaining > MiB:
            blocks[i:i + 1] = [[offset, size, True], [offset + size, remaining, False]]  # fmt: skip
        blocks[i][2] = True
        return s, offset, blocks[i][1]

    def free_all_but(self, live_offsets: set[tuple[int, int]]) -> None:
        for s, (_, blocks) in enumerate(self.segments):
            for blk in blocks:
                blk[2] = (s, blk[0]) in live_offsets
            merged: list[list] = []
            for blk in blocks:
                if merged and not blk[2] and not merged[-1][2]:
                    merged[-1][1] += blk[1]
                else:
                    merged.append(blk)
            blocks[:] = merged


def test_matches_a_literal_model_on_random_traffic() -> None:
    rng = random.Random(0)
    fast, slow = CachingAllocator(), _Reference()
    live: list[tuple[int, int, int]] = []
    for _ in range(1500):
        if live and rng.random() < 0.45:
            fast.free(live.pop(rng.randrange(len(live))))
            slow.free_all_but({(s, o) for s, o, _ in live})
        else:
            nbytes = rng.choice(
                [rng.randint(1, 8 * KiB), rng.randint(1, 2 * MiB), rng.randint(1, 40 * MiB)]
            )
            live.append(fast.malloc(nbytes))
            assert live[-1] == slow.malloc(nbytes)
        assert len(fast.segment_sizes) == len(slow.segments)
        assert fast.allocated == sum(size for _, _, size in live)


def test_replay_is_fast_and_keeps_its_identities() -> None:
    rng = random.Random(1)
    t, live = Timeline(), []
    while len(t.events) < 20_000:
        if live and rng.random() < 0.5:
            t.free(live.pop(rng.randrange(len(live))))
        else:
            live.append(alloc(t, rng.choice([rng.randint(1, MiB), rng.randint(1, 64 * MiB)])))
    start = time.perf_counter()
    r = replay(t, "cuda")
    assert time.perf_counter() - start < 1.0
    assert all(a <= res for a, res in zip(r.allocated, r.reserved, strict=True))
    running = 0
    for (block_id, sign), allocated in zip(t.events, r.allocated, strict=True):
        running += r.sizes[block_id] if sign == ALLOC else -r.sizes[block_id]
        assert running == allocated
    assert r.peak_allocated == r.allocated[r.peak_index] == max(r.allocated)
