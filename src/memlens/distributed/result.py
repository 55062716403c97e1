"""What a parallel estimate adds to an :class:`~memlens.Estimate`: the layout, the table of
distinct ranks and NCCL's memory outside the allocator (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from memlens.workload import Layout


@dataclass(frozen=True)
class RankRow:
    """One distinct rank: its mesh coordinates and its budget."""

    rank: int
    coordinates: dict[str, int]
    peak_bytes: int  # allocated, at the rank's peak
    reserved_peak_bytes: int
    total_bytes: int  # reserved + context + NCCL
    breakdown: dict[str, int]
    peak_phase: str
    ranks_alike: int  # how many ranks of the world hold the same budget


@dataclass
class ParallelInfo:
    """The per-rank view of a step under a parallel layout; the :class:`Estimate` carrying it
    is the worst rank's."""

    layout: Layout
    ranks: list[RankRow]
    worst_rank: int
    nccl: list[tuple[str, int]] = field(default_factory=list)  # device memory outside the allocator
    traced: str = ""  # which ranks were traced, and why those suffice

    @property
    def outside_bytes(self) -> int:
        """NCCL's device memory: outside the caching allocator, like the CUDA context."""
        return sum(n for _, n in self.nccl)
