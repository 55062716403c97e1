"""Run the workload of an estimate for real and compare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memlens._results import Estimate
from memlens.measurement import measure_spec
from memlens.measurement.result import Measurement
from memlens.sources.registry import resolve
from memlens.targets import resolve_target


def compare_with_run(
    model: Any,
    est: Estimate,
    *,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Measurement:
    """Measure the same model and workload as ``est`` on the real device."""
    # An estimate without a catalog device was made for a generic GPU: a "cuda" device.
    target = resolve_target(est.device if est.device is not None else "cuda")
    return measure_spec(resolve(model, inputs=inputs), est.workload, target, loss=loss)


def error(estimated: int, measured: int) -> float:
    """Signed relative error of an estimate, as a fraction of the measured value."""
    return (estimated - measured) / measured if measured else 0.0
