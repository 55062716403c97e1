"""Make it fit: the largest batch size on a device, and ranked strategies for a target batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from memlens._errors import ConfigError
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

    @property
    def seconds_per_trace(self) -> float:
        return self.seconds / max(self.traces, 1)

    def to_dict(self) -> dict[str, Any]:
        s = self.strategies
        return {
            "model": self.model,
            "device": {"name": self.device.name, "capacity_bytes": self.capacity_bytes},
            "workload": {k: v for k, v in self.workload.to_dict().items() if k != "batch"},
            "max_batch": self.max_batch,
            "bounded": self.search.bounded,
            "cap": self.search.cap,
            "shortfall_bytes": self.shortfall_bytes,
            "total_bytes_at_max": self.at_max.total_bytes,
            "total_bytes_above": self.above.total_bytes if self.above is not None else None,
            "probes": [
                {"batch": p.batch, "total_bytes": p.total_bytes, "fits": p.fits}
                for p in self.search.probes
            ],
            "batch_traces": self.search.traces,
            "strategies": None
            if s is None
            else {
                "target_batch": s.target_batch,
                "as_given": s.baseline.to_dict() if s.baseline is not None else None,
                "fitting": [o.to_dict() for o in s.fitting],
                "closest": s.closest.to_dict() if s.closest is not None else None,
                "unavailable": list(s.unavailable),
                "no_saving": [o.to_dict() for o in s.no_saving],
                "failed": list(s.failed),
                "exhausted": s.exhausted,
                "traces": s.traces,
            },
            "traces": self.traces,
            "seconds": round(self.seconds, 3),
            "search_seconds": round(self.search_seconds, 3),
        }


def fit(
    model: Any,
    *,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    batch: int | None = None,
    optimizer: str = "adam",
    device: str | Device = "cuda",
    budget: int | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    max_batch: int = DEFAULT_CAP,
    strategies: bool = True,
    **options: Any,
) -> FitResult:
    """The largest batch size of ``model`` whose step fits ``device`` (or ``budget``), exact to
    one, and the cheapest strategy combinations that fit at ``batch``.

    Arguments are those of :func:`memlens.estimate`; ``device`` must have a capacity (a
    catalog name, ``"cpu"``, or any kind with a ``budget``). ``batch`` is the target batch of
    the strategy table; by default the power of two above the largest batch that fits (1 when
    none does). ``max_batch`` caps the search.

    Example usage::

        result = memlens.fit("resnet50", device="v100-16gb", optimizer="adam")
        print(result.max_batch, result.traces)
        for option in result.strategies.fitting:
            print(option.label, option.total_bytes, option.risk)
    """
    t0 = time.perf_counter()
    tracer = Tracer(
        model,
        device=device,
        budget=budget,
        inputs=inputs,
        loss=loss,
        mode=mode,
        optimizer=optimizer,
        precision=precision,
        input_shape=input_shape,
        seq_len=seq_len,
        **options,
    )
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
