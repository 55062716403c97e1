"""Make it fit: the largest batch size on a device, and ranked strategies for a target batch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from memlens._errors import ConfigError
from memlens._repr import brief, rows
from memlens._results import Estimate
from memlens.devices import Device
from memlens.plan.batch import DEFAULT_CAP, BatchSearch, search_max_batch
from memlens.plan.strategies import StrategySearch, search_strategies
from memlens.plan.tracer import Tracer
from memlens.workload import Workload


@dataclass
class FitResult:
    """The largest batch that fits (``max_batch``; 0: not even batch 1) and, for a target batch,
    the strategy combinations that fit, cheapest first.

    ``at_max`` and ``above`` are the traced estimates at ``max_batch`` and at the batch above
    it, the proof that the answer is exact (``above`` is None when the search stopped at its
    cap, or when nothing fits: ``at_max`` is then batch 1's estimate). ``traces`` counts every
    :func:`memlens.estimate` call, ``search.traces`` those of the batch search.
    """

    model: str
    device: Device
    search: BatchSearch
    at_max: Estimate
    above: Estimate | None
    strategies: StrategySearch | None
    traces: int
    seconds: float
    search_seconds: float  # the batch search's share of ``seconds``

    @property
    def max_batch(self) -> int:
        return self.search.max_batch

    @property
    def capacity_bytes(self) -> int:
        return self.device.capacity_bytes

    @property
    def workload(self) -> Workload:
        return self.at_max.workload

    @property
    def shortfall_bytes(self) -> int:
        """How far batch 1 is over the capacity (0 when it fits)."""
        return max(self.at_max.total_bytes - self.capacity_bytes, 0) if not self.max_batch else 0

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            device=self.device.name,
            max_batch=self.max_batch,
            capacity_bytes=self.capacity_bytes,
            options=len(self.strategies.fitting) if self.strategies is not None else None,
            traces=self.traces,
        )

    def summary(self) -> str:
        """The long form, as plain text: the largest batch, its peak, the options that fit."""
        from memlens.units import fmt_bytes

        lines = [
            f"{self.model} on {self.device.name} ({fmt_bytes(self.capacity_bytes)}): "
            f"max batch {self.max_batch}, {fmt_bytes(self.at_max.total_bytes)} at it"
        ]
        if self.strategies is not None:
            lines.append(f"at batch {self.strategies.target_batch}:")
            lines += rows([(o.label, fmt_bytes(o.total_bytes)) for o in self.strategies.fitting])
        lines.append(f"{self.traces} traces in {self.seconds:.1f} s")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The budget and verdict as an HTML table (Jupyter)."""
        from memlens.report.markdown import to_html_fragment

        return to_html_fragment(self)

    @property
    def seconds_per_trace(self) -> float:
        return self.seconds / max(self.traces, 1)


def plan_fit(
    tracer: Tracer,
    *,
    batch: int | None = None,
    max_batch: int = DEFAULT_CAP,
    strategies: bool = True,
) -> FitResult:
    """The largest batch size whose step fits the tracer's device, exact to one, and the
    cheapest strategy combinations that fit at ``batch`` (see :func:`memlens.fit`)."""
    t0 = time.perf_counter()
    if tracer.device is None:
        raise ConfigError("fit needs a capacity: name a device (e.g. 'v100-16gb') or give a budget")
    search = search_max_batch(tracer, tracer.device.capacity_bytes, max_batch)
    search_seconds = time.perf_counter() - t0
    best = search.max_batch
    at_max = tracer(max(best, 1))
    above = tracer.cached(best + 1) if search.bounded and best else None
    strategy_search = None
    if strategies and (batch is not None or search.bounded):
        target = batch if batch is not None else 1 << best.bit_length()
        strategy_search = search_strategies(
            tracer, target, max_batch=best, num_params=at_max.num_params
        )
    return FitResult(
        model=tracer.spec.name,
        device=tracer.device,
        search=search,
        at_max=at_max,
        above=above,
        strategies=strategy_search,
        traces=tracer.count,
        seconds=time.perf_counter() - t0,
        search_seconds=search_seconds,
    )
