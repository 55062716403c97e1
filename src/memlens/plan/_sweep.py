"""Memory against batch size: one estimate per batch, for a table and a plot."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from memlens._errors import WorkloadError
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": None
            if self.device is None
            else {"name": self.device.name, "capacity_bytes": self.device.capacity_bytes},
            "rows": [
                {
                    "batch": e.workload.batch,
                    "peak_bytes": e.peak_bytes,
                    "reserved_peak_bytes": e.reserved_peak_bytes,
                    "total_bytes": e.total_bytes,
                    "fits": e.fits,
                    "budget": {cat.value: n for cat, n in e.budget()},
                }
                for e in self.estimates
            ],
            "traces": len(self.estimates),
            "seconds": round(self.seconds, 3),
        }


def sweep(
    model: Any,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    optimizer: str = "adam",
    device: str | Device = "cuda",
    budget: int | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    **options: Any,
) -> SweepResult:
    """Estimate ``model`` at each batch size of ``batches`` (other arguments as in
    :func:`memlens.estimate`).

    Example usage::

        result = memlens.sweep("resnet50", batches=[1, 8, 32, 64], device="v100-16gb")
        for e in result.estimates:
            print(e.workload.batch, e.peak_bytes, e.total_bytes)
    """
    if not batches:
        raise WorkloadError("batches", batches, "give at least one batch size")
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
    estimates = [tracer(b) for b in sorted(set(batches))]
    return SweepResult(tracer.spec.name, tracer.device, estimates, time.perf_counter() - t0)
