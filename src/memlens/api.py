"""The Python API: every CLI command has a twin here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memlens.estimate import Estimate, estimate, make_workload, resolve_device
from memlens.measurement import Measurement, measure_spec
from memlens.plan import FitResult, SweepResult, fit, sweep
from memlens.sources.registry import resolve

__all__ = [
    "Estimate",
    "FitResult",
    "Measurement",
    "SweepResult",
    "estimate",
    "fit",
    "measure",
    "sweep",
]


def measure(
    model: Any,
    *,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    batch: int | None = None,
    optimizer: str = "adam",
    device: str = "cuda",
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    **options: Any,
) -> Measurement:
    """Run one steady-state step of ``model`` for real and measure it (same arguments as
    :func:`memlens.estimate`; ``device`` is ``"cpu"`` or ``"cuda"``)."""
    kind, _ = resolve_device(device, None)
    workload = make_workload(
        mode=mode,
        batch=batch,
        input_shape=input_shape,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        device=kind,
        **options,
    )
    return measure_spec(resolve(model, inputs=inputs), workload, loss=loss)
