"""The estimate of a step under a parallel layout: each distinct rank traced on the fake
process group with PyTorch's own parallel code, the worst rank's :class:`Estimate` returned
with the table of ranks (:class:`~memlens.distributed.result.ParallelInfo`).

Ranks are symmetric within a pipeline stage: under DDP, FSDP2 (which pads every shard to the
same size: ``FSDPParam._init_sharded_param``) and tensor parallelism with even splits, every
rank allocates the same bytes in the same order, so one rank per stage is traced and stands
for its stage's ranks. Tracing rank 0 of 64 costs what tracing one device does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from memlens._errors import ConfigError
from memlens._pipeline import from_trace
from memlens._results import Estimate
from memlens.distributed import nccl
from memlens.distributed.gloo import gloo_rules
from memlens.distributed.pipeline import StageStep
from memlens.distributed.result import ParallelInfo, RankRow
from memlens.distributed.strategies import ParallelStrategies, check_traceable
from memlens.distributed.world import coordinates, fake_world, torch_supports_layouts
from memlens.engine.build import build_fake
from memlens.engine.trace import trace
from memlens.sources.base import ModelSpec
from memlens.strategies.apply import WorkloadStrategies
from memlens.strategies.checkpointing import find_blocks
from memlens.targets import Target
from memlens.workload import Workload

#: Above this many repeated blocks a rank is traced with :data:`SAMPLED` of them and
#: extrapolated per block.
SCALE_ABOVE = 8
SAMPLED = (3, 4)


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
    t0 = time.perf_counter()
    if layout.pp > 1:
        # one rank per stage: within a stage, ranks are alike
        group = layout.world_size // layout.pp
        stages = [
            (_trace_rank(spec, workload, target, s * group, loss, stage=s), s * group, s)
            for s in range(layout.pp)
        ]
        how = f"one rank per pipeline stage traced (each stands for its {group} ranks)"
    else:
        est, how = _symmetric(spec, workload, target, loss, t0)
        stages = [(est, 0, 0)]
    rows, lines_of = [], {}
    for est, rank, stage in stages:
        lines = nccl.nccl_lines(layout, stage) if target.kind in ("cuda", "rocm") else []
        lines_of[rank] = lines
        rows.append(
            RankRow(
                rank=rank,
                coordinates=coordinates(layout, rank),
                peak_bytes=est.peak_bytes,
                reserved_peak_bytes=est.reserved_peak_bytes,
                total_bytes=est.total_bytes + sum(n for _, n in lines),
                breakdown=dict(est.breakdown),
                peak_phase=est.peak_phase,
                ranks_alike=layout.world_size // layout.pp,
            )
        )
    worst = max(range(len(rows)), key=lambda i: rows[i].total_bytes)
    est, rank, _ = stages[worst]
    info = ParallelInfo(
        layout=layout,
        ranks=rows,
        worst_rank=rank,
        nccl=lines_of[rank],
        traced=how,
    )
    notes = _notes(workload, bool(lines_of[rank]))
    seconds = time.perf_counter() - t0
    return replace(est, parallel=info, unknowns=[*est.unknowns, *notes], seconds=seconds)


def _symmetric(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None,
    t0: float,
) -> tuple[Estimate, str]:
    """Rank 0's estimate, standing for every rank (no pipeline stages), and how it was
    made: deep models at :data:`SAMPLED` blocks, extrapolated per block."""
    layout = workload.layout
    alike = (
        f"; all {layout.world_size} ranks are alike (FSDP pads every shard to one size, "
        "tensor-parallel splits are even)"
    )
    blocks = _block_count(spec, workload)
    if blocks > SCALE_ABOVE and not layout.ddp:  # DDP's bucket count is not per block
        # 3 and 4 blocks: with 2, FSDP's root all-gather can still peak in forward
        small, large = (
            _trace_rank(_truncated(spec, keep), workload, target, 0, loss) for keep in SAMPLED
        )
        if (small.peak_phase, small.peak_module.split(".")[-1]) == (
            large.peak_phase,
            large.peak_module.split(".")[-1],
        ):  # the peak at the same place: one affine function of depth
            est = _extrapolated(small, large, blocks, time.perf_counter() - t0)
            first, second = SAMPLED
            return est, f"rank 0 traced with {first} and {second} of its {blocks} blocks, " + (
                "extrapolated" + alike
            )
    return _trace_rank(spec, workload, target, 0, loss), "rank 0 traced" + alike


def _trace_rank(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    rank: int,
    loss: Callable[..., torch.Tensor] | None,
    stage: int = 0,
) -> Estimate:
    """The estimate of rank ``rank`` (of pipeline stage ``stage``), traced on the fake
    process group; a pipeline stage runs its schedule's step
    (:class:`~memlens.distributed.pipeline.StageStep`)."""
    t0 = time.perf_counter()
    with fake_world(workload.layout, rank) as meshes:
        inner = WorkloadStrategies(workload, target)
        strategies = ParallelStrategies(inner, workload, meshes, stage=stage)
        traced = workload
        if workload.layout.pp > 1:
            step = StageStep(workload.layout, stage, rank, lambda: strategies.autocast("cpu"))
            traced = workload.with_(step=step)
        extra = gloo_rules() if target.kind == "cpu" else None  # a CPU target runs on gloo
        result = trace(spec, traced, target, strategies, loss=loss, extra_rules=extra)
    return from_trace(result, spec.name, spec.source, workload, target, time.perf_counter() - t0)


def _block_count(spec: ModelSpec, workload: Workload) -> int:
    """How many repeated blocks the model has (built on fake tensors)."""
    return len(find_blocks(build_fake(spec, workload).model))


def _truncated(spec: ModelSpec, keep: int) -> ModelSpec:
    """``spec`` whose model keeps only its first ``keep`` repeated blocks (a Hugging Face
    decoder runs ``self.layers[: num_hidden_layers]``: as many as the list holds)."""

    def build() -> nn.Module:
        model = spec.build()
        blocks = find_blocks(model)
        parent = blocks[0].rpartition(".")[0]
        container = model.get_submodule(parent)
        if not isinstance(container, nn.ModuleList) or any(
            b.rpartition(".")[0] != parent for b in blocks
        ):
            raise ConfigError(f"{spec.name}: its blocks are not one list; cannot scale its depth")
        owner, _, name = parent.rpartition(".")
        setattr(model.get_submodule(owner), name, nn.ModuleList(list(container)[:keep]))
        return model

    return replace(spec, build=build)


def _extrapolated(small: Estimate, large: Estimate, blocks: int, seconds: float) -> Estimate:
    """The estimate of ``blocks`` blocks from those of :data:`SAMPLED` blocks (one apart):
    each quantity grows by its per-block step (``large - small``) for every further block.
    Under FSDP and tensor parallelism every block adds the same sharded states and the same
    activations kept for backward, and the peak (in backward, as it starts) holds all of
    them: memory is affine in depth (the caller checks that both traces peak at the same
    place). Curves and the timeline stay the larger trace's."""

    def grow(a: int, b: int) -> int:
        return b + (blocks - SAMPLED[1]) * (b - a)

    first = None
    if small.first_step_peak_bytes is not None and large.first_step_peak_bytes is not None:
        first = grow(small.first_step_peak_bytes, large.first_step_peak_bytes)
    cats = set(small.breakdown) | set(large.breakdown)
    peak = grow(small.peak_bytes, large.peak_bytes)
    return replace(
        large,
        num_params=grow(small.num_params, large.num_params),
        trainable_params=grow(small.trainable_params, large.trainable_params),
        peak_bytes=peak,
        # the caching allocator's slack does not grow per block (segments round large
        # blocks to 2 MiB): the larger of the two traces' slack, over the grown peak
        reserved_peak_bytes=peak + max(small.slack_bytes, large.slack_bytes),
        breakdown={
            c: grow(small.breakdown.get(c, 0), large.breakdown.get(c, 0)) for c in sorted(cats)
        },
        first_step_peak_bytes=first,
        step_flops=grow(small.step_flops, large.step_flops),
        recompute_flops=grow(small.recompute_flops, large.recompute_flops),
        seconds=seconds,
        unknowns=[
            *large.unknowns,
            f"depth: traced with {SAMPLED[0]} and {SAMPLED[1]} of the model's {blocks} blocks "
            "and extrapolated per block (blocks alike; the allocator's slack taken as the "
            "traces' largest)",
        ],
    )


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
    if layout.pp > 1:
        notes.append(
            f"pipeline ({layout.pp_schedule}, {layout.microbatches} micro-batches): each "
            "stage traced with its schedule's micro-batches in flight, forwards then "
            "backwards, and one receive buffer per micro-batch (torch.distributed.pipelining "
            "stage.py); send buffers and the schedule's own bookkeeping are not counted"
        )
    if layout.ddp:
        notes.append(
            "DDP: its reducer's buckets are modelled (reducer.cpp); the first step's "
            "bucket rebuild by autograd order is not"
        )
    return notes
