"""The engine's output: every storage allocation and free of one step, in order.

A :class:`Timeline` is a list of :class:`Block` (one per storage, with its size and what it
is for) and a list of events ``(block_id, +1 | -1)``. Its curve is exact byte counting, the
CPU allocator's view; :mod:`memlens.allocator` replays it under a device's allocator rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from memlens.categories import Category, Phase

ALLOC, FREE = 1, -1


@dataclass(slots=True)
class Block:
    """One storage: its size, category, and where it was allocated."""

    id: int
    nbytes: int
    category: Category
    phase: Phase
    module: str  # dotted module path ("" is the root model)
    op: str  # the op that allocated it ("parameter", "input", "aten.mm", ...)
    alloc_at: int = -1  # event index of its allocation
    free_at: int | None = None  # event index of its free; None if alive at the end
    tensor: str = ""  # dtype and shape of the first tensor seen on it ("float32[32, 64]")


@dataclass
class Timeline:
    """Ordered allocation/free events of one traced step."""

    blocks: list[Block] = field(default_factory=list)
    events: list[tuple[int, int]] = field(default_factory=list)
    phase_marks: list[tuple[int, Phase]] = field(default_factory=list)  # (event index, phase)

    def __repr__(self) -> str:
        return f"Timeline(blocks={len(self.blocks)}, events={len(self.events)})"

    def alloc(
        self, nbytes: int, category: Category, phase: Phase, module: str, op: str, tensor: str = ""
    ) -> int:
        """Record an allocation; returns the new block's id."""
        block = Block(len(self.blocks), int(nbytes), category, phase, module, op, len(self.events))
        block.tensor = tensor
        self.blocks.append(block)
        self.events.append((block.id, ALLOC))
        return block.id

    def free(self, block_id: int) -> None:
        """Record the free of a live block."""
        self.blocks[block_id].free_at = len(self.events)
        self.events.append((block_id, FREE))

    def mark_phase(self, phase: Phase) -> None:
        """Note that ``phase`` starts at the next event (phases repeat with micro-batches)."""
        self.phase_marks.append((len(self.events), phase))

    @property
    def phase_starts(self) -> dict[Phase, int]:
        """The event index where each phase first starts."""
        starts: dict[Phase, int] = {}
        for index, phase in self.phase_marks:
            starts.setdefault(phase, index)
        return starts

    def phase_at(self, index: int) -> Phase:
        """The phase an event index belongs to."""
        current = Phase.SETUP
        for start, phase in self.phase_marks:  # in order of recording
            if start > index:
                break
            current = phase
        return current

    def curve(self) -> list[int]:
        """Live bytes after each event (exact sizes, no allocator rounding)."""
        live, out = 0, []
        for block_id, sign in self.events:
            live += sign * self.blocks[block_id].nbytes
            out.append(live)
        return out

    def live_at(self, index: int) -> list[Block]:
        """Blocks alive just after event ``index``."""
        return [
            b
            for b in self.blocks
            if b.alloc_at <= index and (b.free_at is None or b.free_at > index)
        ]

    def category_peaks(self, sizes: dict[int, int] | None = None) -> dict[Category, int]:
        """The largest number of bytes each category reaches at any point of the step."""
        live: Counter[Category] = Counter()
        peaks: Counter[Category] = Counter()
        for block_id, sign in self.events:
            b = self.blocks[block_id]
            live[b.category] += sign * (sizes[b.id] if sizes is not None else b.nbytes)
            if live[b.category] > peaks[b.category]:
                peaks[b.category] = live[b.category]
        return dict(peaks)

    def breakdown_at(self, index: int, sizes: dict[int, int] | None = None) -> dict[Category, int]:
        """Bytes per category alive just after event ``index`` (``sizes`` overrides block sizes)."""
        out: Counter[Category] = Counter()
        for b in self.live_at(index):
            out[b.category] += sizes[b.id] if sizes is not None else b.nbytes
        return dict(out)
