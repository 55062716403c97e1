"""Run a workload for real and measure what the allocator held (the ground truth)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from memlens._errors import MeasureError
from memlens.measurement.real import build_real
from memlens.measurement.result import Measurement
from memlens.sources.base import ModelSpec
from memlens.workload import Workload


def measure_spec(
    spec: ModelSpec, workload: Workload, *, loss: Callable[..., torch.Tensor] | None = None
) -> Measurement:
    """Measure one steady-state step of ``spec`` on ``workload.device``."""
    if workload.device == "cuda":
        if not torch.cuda.is_available():
            raise MeasureError("no CUDA device here: measure with --device cpu, or on a GPU host")
        from memlens.measurement.cuda import measure_cuda

        return measure_cuda(build_real(spec, workload, "cuda", loss), workload)
    from memlens.measurement.cpu import measure_cpu

    return measure_cpu(build_real(spec, workload, "cpu", loss), workload)
