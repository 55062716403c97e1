"""Memory against batch size: one estimate per batch, for a table and a plot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from memlens._repr import brief, rows
from memlens._results import Estimate
from memlens.devices import Device
from memlens.plan.tracer import Tracer

#: Batch sizes swept when none are given.
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class SweepResult:
    """One :class:`Estimate` per batch size, in increasing batch order."""

    model: str
    device: Device | None
    estimates: list[Estimate]
    seconds: float

    @property
    def batches(self) -> list[int]:
        return [e.workload.batch for e in self.estimates]

    @property
    def capacity_bytes(self) -> int | None:
        return self.device.capacity_bytes if self.device is not None else None

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            device=self.device.name if self.device is not None else None,
            batches=self.batches,
            peak_bytes=max((e.peak_bytes for e in self.estimates), default=None),
        )

    def summary(self) -> str:
        """The long form, as plain text: the peaks at each batch size."""
        from memlens.units import fmt_bytes

        pairs = [
            (
                f"batch {e.workload.batch}",
                f"{fmt_bytes(e.peak_bytes)} allocated, "
                f"{fmt_bytes(e.total_bytes)} total"
                + ("" if e.fits is not False else ", does not fit"),
            )
            for e in self.estimates
        ]
        return "\n".join([f"{self.model}: memory against batch size", *rows(pairs)])

    def _repr_html_(self) -> str:
        """The budget and verdict as an HTML table (Jupyter)."""
        from memlens.report.markdown import to_html_fragment

        return to_html_fragment(self)


def plan_sweep(tracer: Tracer, batches: Sequence[int]) -> SweepResult:
    """The tracer's estimate at each batch size of ``batches`` (see :func:`memlens.sweep`)."""
    t0 = time.perf_counter()
    estimates = [tracer(b) for b in sorted(set(batches))]
    return SweepResult(tracer.spec.name, tracer.device, estimates, time.perf_counter() - t0)
