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
    """Measure the same model and workload as ``est`` on the real device, refused when
    ``est`` exceeds the memory free there now (:func:`~memlens.measurement.guard.check_room`;
    ``memlens measure --force`` runs it anyway)."""
    from memlens.measurement.guard import check_room

    # An estimate without a catalog device was made for a generic GPU: a "cuda" device.
    target = resolve_target(est.device if est.device is not None else "cuda")
    kind = "cuda" if target.kind == "cuda" else "cpu"
    check_room(est.peak_bytes if kind == "cpu" else est.total_bytes, kind)
    return measure_spec(resolve(model, inputs=inputs), est.workload, target, loss=loss)


def error(estimated: int, measured: int) -> float:
    """Signed relative error of an estimate, as a fraction of the measured value."""
    return (estimated - measured) / measured if measured else 0.0
