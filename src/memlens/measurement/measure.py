"""Run a workload for real and measure what the allocator held (the ground truth)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from memlens._errors import MeasureError
from memlens.measurement.real import build_real
from memlens.measurement.result import Measurement
from memlens.sources.base import ModelSpec
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import Target
from memlens.workload import Workload


def measure_spec(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    *,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Measurement:
    """Measure one steady-state step of ``spec`` on a real device of ``target``'s kind (a
    ROCm GPU is a ``cuda`` device to PyTorch), with the same strategies as an estimate."""
    strategies = WorkloadStrategies(workload, target)
    if target.kind == "cuda":
        if not torch.cuda.is_available():
            raise MeasureError("no CUDA device here: measure with --device cpu, or on a GPU host")
        from memlens.measurement.cuda import measure_cuda

        return measure_cuda(build_real(spec, workload, strategies, "cuda", loss), workload)
    from memlens.measurement.cpu import measure_cpu

    return measure_cpu(build_real(spec, workload, strategies, "cpu", loss), workload)
