"""The estimate of a step under a parallel layout: each distinct rank traced on the fake
process group with PyTorch's own parallel code, the worst rank's :class:`Estimate` returned
with the table of ranks (:class:`~memlens.distributed.result.ParallelInfo`).

Ranks are symmetric without pipeline stages: under DDP, FSDP2 (which pads every shard to the
same size: ``FSDPParam._init_sharded_param``) and tensor parallelism with even splits, every
rank allocates the same bytes in the same order, so one rank (0) is traced and stands for
all ``world_size``. Tracing rank 0 of 64 costs what tracing one device does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch

from memlens._errors import ConfigError
from memlens._pipeline import from_trace
from memlens._results import Estimate
from memlens.distributed import nccl
from memlens.distributed.gloo import gloo_rules
from memlens.distributed.result import ParallelInfo, RankRow
from memlens.distributed.strategies import ParallelStrategies, check_traceable
from memlens.distributed.world import coordinates, fake_world, torch_supports_layouts
from memlens.engine.trace import trace
from memlens.sources.base import ModelSpec
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import Target
from memlens.workload import Workload


def estimate_parallel(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Estimate:
    """Trace the distinct ranks of ``workload.layout`` and return the worst rank's estimate,
    its ``parallel`` field holding every distinct rank."""
    if not torch_supports_layouts():
        raise ConfigError(
            f"traced parallel layouts need torch >= 2.4 (FSDP2, named DeviceMesh), not "
            f"{torch.__version__}"
        )
    check_traceable(workload)
    layout = workload.layout
    rank = 0
    t0 = time.perf_counter()
    with fake_world(layout, rank) as meshes:
        strategies = ParallelStrategies(WorkloadStrategies(workload, target), workload, meshes)
        extra = gloo_rules() if target.kind == "cpu" else None  # a CPU target runs on gloo
        result = trace(spec, workload, target, strategies, loss=loss, extra_rules=extra)
    est = from_trace(result, spec.name, spec.source, workload, target, time.perf_counter() - t0)
    lines = nccl.nccl_lines(layout) if target.kind in ("cuda", "rocm") else []
    notes = _notes(workload, bool(lines))
    row = RankRow(
        rank=rank,
        coordinates=coordinates(layout, rank),
        peak_bytes=est.peak_bytes,
        reserved_peak_bytes=est.reserved_peak_bytes,
        total_bytes=est.total_bytes + sum(n for _, n in lines),
        breakdown=dict(est.breakdown),
        peak_phase=est.peak_phase,
        ranks_alike=layout.world_size,
    )
    info = ParallelInfo(
        layout=layout,
        ranks=[row],
        worst_rank=rank,
        nccl=lines,
        traced=f"rank {rank} traced; all {layout.world_size} ranks are alike (no pipeline "
        "stages; FSDP pads every shard to one size)",
    )
    return replace(est, parallel=info, unknowns=[*est.unknowns, *notes])


def _notes(workload: Workload, nccl_counted: bool) -> list[str]:
    """What the parallel trace assumes, for the estimate's unknowns."""
    layout = workload.layout
    notes = []
    if nccl_counted:
        notes.append(nccl.ASSUMPTION)
    if layout.tp > 1:
        notes.append(
            "tensor parallel: embeddings, norms and the head are replicated (no loss "
            "parallel); the plan is the family's (memlens.distributed.parallelize.tp_plan)"
        )
    if layout.fsdp != "none" and workload.amp:
        notes.append(
            f"FSDP with {workload.precision}: MixedPrecisionPolicy(param_dtype=half, "
            "reduce_dtype=fp32) instead of autocast, as torchtitan runs it"
        )
    if layout.fsdp != "none":
        notes.append(
            "FSDP on one CPU stream: the next block's all-gather prefetch that CUDA's "
            "separate all-gather stream overlaps with compute is not in flight at the peak"
        )
    if layout.ddp:
        notes.append(
            "DDP: its reducer's buckets are modelled (reducer.cpp); the first step's "
            "bucket rebuild by autograd order is not"
        )
    return notes
