"""The result of an estimate: :class:`Estimate` (written as JSON by
:func:`memlens.report.json.to_json`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memlens._repr import brief, rows
from memlens.allocator import AllocatorResult
from memlens.categories import Category
from memlens.devices import Device, FitsDevice
from memlens.strategies.data import HostMemory
from memlens.timeline import Timeline
from memlens.workload import Workload

if TYPE_CHECKING:
    from memlens.distributed.result import ParallelInfo


@dataclass
class Estimate(FitsDevice):
    """Peak memory of one step and what it is made of.

    ``peak_bytes`` is the allocator's peak of *allocated* bytes (``max_memory_allocated`` on
    CUDA, the allocator's running total on CPU); ``breakdown`` splits it by category and
    sums to it exactly. ``reserved_peak_bytes`` adds the caching allocator's slack, and
    ``total_bytes`` the per-process overhead outside the allocator (the CUDA context).
    :meth:`overheads` says what the framework overhead is made of.
    """

    model: str
    source: str
    workload: Workload
    device: Device | None
    num_params: int
    trainable_params: int
    peak_bytes: int
    reserved_peak_bytes: int
    breakdown: dict[str, int]
    peak_phase: str
    peak_module: str
    peak_op: str
    context_bytes: int
    timeline: Timeline
    allocator: AllocatorResult
    first_step_peak_bytes: int | None
    seconds: float
    unknowns: list[str] = field(default_factory=list)
    strategies: dict[str, Any] = field(default_factory=dict)  # what the strategies did
    step_flops: int = 0  # FLOPs of the traced step
    recompute_flops: int = 0  # of which: forward ops re-run by activation checkpointing
    host: HostMemory | None = None  # host (CPU) memory outside the device's allocator
    parallel: ParallelInfo | None = None  # under a parallel layout: this is the worst rank

    @property
    def slack_bytes(self) -> int:
        """Reserved by the caching allocator at its peak but not allocated."""
        return self.reserved_peak_bytes - self.peak_bytes

    @property
    def total_bytes(self) -> int:
        """What the device holds at the peak: reserved memory plus the context (and, under a
        parallel layout, NCCL's buffers)."""
        outside = self.parallel.outside_bytes if self.parallel is not None else 0
        return self.reserved_peak_bytes + self.context_bytes + outside

    @property
    def tight(self) -> bool:
        """Fits, but with less free than the workload's ``headroom`` share of the device."""
        cap, free = self.capacity_bytes, self.free_bytes
        return bool(cap and free is not None and 0 <= free < self.workload.headroom * cap)

    @property
    def recompute_share(self) -> float:
        """Extra compute of activation checkpointing: recomputed FLOPs over the FLOPs of the
        same step without recomputation."""
        base = self.step_flops - self.recompute_flops
        return self.recompute_flops / base if base > 0 else 0.0

    @property
    def context_label(self) -> str:
        """What the memory outside the allocator is: ``"CUDA context"``, ``"HIP context"``."""
        kind = self.device.kind if self.device is not None else "cuda"
        return {"rocm": "HIP context", "cuda": "CUDA context"}.get(kind, "runtime context")

    def workspaces(self) -> dict[str, int]:
        """Library buffers alive at the peak (cuBLAS and cuBLASLt workspaces), through the
        allocator, by name, in bytes as the allocator accounts them; part of the
        ``framework_overhead`` category of :attr:`breakdown`."""
        index = self.allocator.peak_index
        out: Counter[str] = Counter()
        if index >= 0:
            for b in self.timeline.live_at(index):
                if b.category is Category.FRAMEWORK_OVERHEAD:
                    out[b.op] += self.allocator.sizes.get(b.id, b.nbytes)
        return dict(sorted(out.items()))

    def overheads(self) -> list[tuple[str, int]]:
        """What the ``framework_overhead`` row of :meth:`budget` is made of: the context
        (outside the allocator), then each library workspace (through it), then anything
        else of the category; rows of zero bytes left out. (Allocator slack has its own row.)"""
        workspaces = self.workspaces()
        other = self.breakdown.get(Category.FRAMEWORK_OVERHEAD.value, 0) - sum(workspaces.values())
        nccl = self.parallel.nccl if self.parallel is not None else []
        rows = [
            (self.context_label, self.context_bytes),
            *nccl,
            *workspaces.items(),
            ("other", other),
        ]
        return [(label, n) for label, n in rows if n]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Subclasses (a generation estimate) keep the short repr: ``@dataclass`` writes its
        long one only where the class body has none."""
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Estimate.__repr__  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            device=self.device.name if self.device is not None else None,
            mode=self.workload.mode,
            batch=self.workload.batch,
            peak_bytes=self.peak_bytes,
            total_bytes=self.total_bytes,
            fits=self.fits,
            unknowns=len(self.unknowns),
        )

    def summary(self) -> str:
        """The long form, as plain text: the step, the budget at the peak by category, the
        verdict, where the peak is, and what the estimate could not know."""
        from memlens.units import fmt_bytes

        w = self.workload
        where = self.device.name if self.device is not None else "no device"
        lines = [f"{self.model} ({self.source}) · {w.mode} · batch {w.batch} · on {where}"]
        budget = [(cat.value, fmt_bytes(n)) for cat, n in self.budget() if n]
        lines += rows([*budget, ("total", fmt_bytes(self.total_bytes))])
        if self.fits is None:
            lines.append("no device capacity: no verdict")
        else:
            free = self.free_bytes or 0
            state = "TIGHT" if self.tight else "FITS" if self.fits else "DOES NOT FIT"
            lines.append(f"{state}: {fmt_bytes(abs(free))} {'free' if free >= 0 else 'short'}")
        lines.append(
            f"peak in {self.peak_phase} at {self.peak_module or '<root>'} ({self.peak_op})"
        )
        lines += [f"note: {u}" for u in self.unknowns]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The budget and verdict as an HTML table (Jupyter)."""
        from memlens.report.markdown import to_html_fragment

        return to_html_fragment(self)

    def budget(self) -> list[tuple[Category, int]]:
        """Rows of the budget table, in category order, summing to :attr:`total_bytes`."""
        rows = []
        for cat in Category:
            n = self.breakdown.get(cat.value, 0)
            if cat is Category.ALLOCATOR_SLACK:
                n += self.slack_bytes
            elif cat is Category.FRAMEWORK_OVERHEAD:
                n += self.context_bytes
                n += self.parallel.outside_bytes if self.parallel is not None else 0
            rows.append((cat, n))
        return rows
