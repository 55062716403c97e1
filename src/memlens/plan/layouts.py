"""``memlens fit MODEL --gpus N``: the parallel layouts of a training step that fit N GPUs,
in closed form (:mod:`memlens.analytic`), least communication first.

Every layout ``dp x tp x pp x cp = N`` is considered with tensor parallelism within a node
(tp <= 8, dividing the heads and key/value heads; with sequence parallelism), pipeline
stages dividing the layers' count at most once per layer, context parallelism for long
sequences (seq >= 8192), data parallelism as DDP, FSDP grad-op or FSDP full (or the
workload's DeepSpeed ZeRO stage, kept as given), and activation checkpointing none,
selective or blocks. Each gets its largest micro-batch: every moment of the step is affine in
the micro-batch (:mod:`memlens.analytic.layout`), so two evaluations give the answer, and a
third at it checks it.

Ranking: the pipeline bubble (idle time no bandwidth buys back), then the bytes each GPU
sends per sample it processes (data-parallel all-reduce, all-gather and reduce-scatter;
tensor-, pipeline- and context-parallel traffic; see
:class:`~memlens.analytic.layout.Communication`) at the layout's largest micro-batch, then
the least recomputation, then the larger micro-batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from memlens._errors import ConfigError
from memlens.analytic.estimate import DEFAULT_SEQ_LEN
from memlens.analytic.layout import LayoutEstimate, estimate_layout
from memlens.analytic.transformer import TransformerShape, load_shape
from memlens.devices import Device
from memlens.targets import Target
from memlens.workload import Workload

#: Pipeline micro-batches per step when the workload sets none: 4 per stage keeps the
#: 1F1B bubble (pp - 1) / (M + pp - 1) under 20%.
MICROBATCHES_PER_STAGE = 4
#: Context parallelism is considered from this sequence length.
CP_FROM_SEQ = 8192
MAX_TP = 8


@dataclass
class LayoutRow:
    """One layout that fits, at its largest micro-batch."""

    dp: int
    tp: int
    pp: int
    cp: int
    sharding: str  # "ddp", "fsdp grad-op", "fsdp full", "zero-N", "none"
    checkpoint: str
    micro_batch: int
    microbatches: int  # pipeline micro-batches per step (1 without a pipeline)
    peak_bytes: int  # the worst GPU's total: allocated peak, context and NCCL
    comm_bytes: int  # sent per GPU per step
    gather_scatter_bytes: int  # of which data-parallel all-gather / reduce-scatter / all-reduce
    bubble: float

    @property
    def comm_per_sample(self) -> float:
        return self.comm_bytes / (self.micro_batch * self.microbatches)


@dataclass
class LayoutPlan:
    """The layouts of ``gpus`` GPUs that fit, best first (see the module docstring)."""

    model: str
    num_params: int
    gpus: int
    device: Device
    workload: Workload
    fits: list[LayoutRow]
    considered: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _candidates(shape: TransformerShape, w: Workload, gpus: int) -> list[dict[str, Any]]:
    """The layout fields of every candidate (batch left to the search)."""
    seq = w.seq_len or DEFAULT_SEQ_LEN
    out = []
    for tp in (t for t in _divisors(gpus) if t <= MAX_TP):
        if shape.heads % tp or shape.kv_heads % tp:
            continue
        for pp in (p for p in _divisors(gpus // tp) if p <= shape.layers):
            for cp in _divisors(gpus // (tp * pp)):
                if cp > 1 and (seq < CP_FROM_SEQ or seq % cp or cp > MAX_TP):
                    continue
                dp = gpus // (tp * pp * cp)
                if w.deepspeed is not None:
                    shardings = ["zero"]
                else:
                    shardings = ["ddp", "grad-op", "full"] if dp > 1 else ["none"]
                for sharding in shardings:
                    for ckpt in ("none", "selective", "blocks"):
                        fields: dict[str, Any] = dict(
                            dp=dp,
                            tp=tp,
                            pp=pp,
                            cp=cp,
                            world_size=None,
                            fsdp=sharding if sharding in ("grad-op", "full") else "none",
                            checkpoint=ckpt,
                            sequence_parallel=tp > 1,
                            microbatches=(
                                w.microbatches or MICROBATCHES_PER_STAGE * pp if pp > 1 else None
                            ),
                            pp_schedule=w.pp_schedule if pp > 1 else "1f1b",
                            seq_len=seq,
                            analytic=True,
                        )
                        out.append(fields)
    return out


def _sharding_name(w: Workload) -> str:
    if w.deepspeed is not None:
        return f"zero-{w.deepspeed.stage}"
    if w.fsdp != "none":
        return f"fsdp {w.fsdp}"
    return "ddp" if w.layout.dp > 1 else "none"


def plan_layouts(
    model: str | dict[str, Any],
    workload: Workload,
    target: Target,
    gpus: int,
    *,
    max_micro_batch: int = 1024,
) -> LayoutPlan:
    """Every layout of ``gpus`` GPUs of ``target``'s kind that fits, with its largest
    micro-batch, least communication first."""
    t0 = time.perf_counter()
    if target.device is None:
        raise ConfigError("fit --gpus needs a device: name one (e.g. --gpu h100-80gb)")
    if gpus < 1:
        raise ConfigError("--gpus must be a positive integer")
    if not workload.training:
        raise ConfigError("fit --gpus plans training layouts (use --train)")
    shape = load_shape(model)
    capacity = target.device.capacity_bytes
    workspace = 2 * target.workspace_bytes if target.kind == "cuda" else 0
    candidates = _candidates(shape, workload, gpus)
    rows: list[LayoutRow] = []
    notes: list[str] = []
    seen: set[tuple[Any, ...]] = set()

    def run(w: Workload) -> LayoutEstimate:
        est = estimate_layout(
            shape,
            w,
            device=target.device,
            target_kind=target.kind,
            context_bytes=target.context_bytes,
            workspace_bytes=workspace,
        )
        if target.kind == "cuda" and w.layout.distributed:
            from memlens.distributed.nccl import nccl_lines

            est.nccl = nccl_lines(w.layout, est.worst.stage)
        return est

    for fields in candidates:
        try:
            w = workload.with_(batch=1, **fields)
            one = run(w)
        except ConfigError:
            continue
        two = run(w.with_(batch=2))
        best = _largest(one, two, capacity, max_micro_batch)
        if best < 1:
            continue
        est = run(w.with_(batch=best))
        while best > 1 and not est.fits:  # the affine bound is exact; this guards rounding
            best -= 1
            est = run(w.with_(batch=best))
        if not est.fits:
            continue
        key = (fields["dp"], fields["tp"], fields["pp"], fields["cp"], fields["fsdp"], best)
        key += (est.total_bytes,)
        if key in seen:  # selective equals none when no attention-core tensor is kept
            continue
        seen.add(key)
        c = est.communication
        rows.append(
            LayoutRow(
                dp=w.layout.dp,
                tp=w.layout.tp,
                pp=w.layout.pp,
                cp=w.layout.cp,
                sharding=_sharding_name(w),
                checkpoint=fields["checkpoint"],
                micro_batch=best,
                microbatches=w.layout.microbatches if w.layout.pp > 1 else 1,
                peak_bytes=est.total_bytes,
                comm_bytes=c.total_bytes,
                gather_scatter_bytes=c.data_parallel,
                bubble=c.bubble,
            )
        )
    recompute = {"none": 0, "selective": 1, "blocks": 2}
    rows.sort(
        key=lambda r: (
            round(r.bubble, 2),
            r.comm_per_sample,
            recompute[r.checkpoint],
            -r.micro_batch,
        )
    )
    if any(f["pp"] > 1 for f in candidates) and workload.microbatches is None:
        notes.append(
            f"pipeline layouts run {MICROBATCHES_PER_STAGE} x pp micro-batches per step "
            "(--microbatches sets it)"
        )
    notes.append("tensor parallelism with sequence parallelism, within a node (tp <= 8)")
    notes.append(
        "ranked by pipeline bubble, then bytes sent per GPU per sample (data-parallel "
        "all-gather/reduce-scatter or all-reduce, tensor/pipeline/context traffic), then "
        "recomputation"
    )
    return LayoutPlan(
        model=shape.name,
        num_params=shape.num_params,
        gpus=gpus,
        device=target.device,
        workload=workload,
        fits=rows,
        considered=len(candidates),
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def _largest(one: LayoutEstimate, two: LayoutEstimate, capacity: int, cap: int) -> int:
    """The largest micro-batch whose every moment fits: each moment is ``a + k b``."""
    outside = one.total_bytes - one.peak_bytes  # context and NCCL: not per sample
    best = cap
    for s1, s2 in zip(one.stages, two.stages, strict=True):
        for name, m1 in s1.moments.items():
            k = s2.moments[name] - m1
            a = m1 - k
            room = capacity - outside - a
            if room < k:
                return 0
            if k > 0:
                best = min(best, room // k)
    return best


def fit_layouts(
    model: str | dict[str, Any],
    gpus: int,
    workload: Workload | None = None,
    *,
    device: str | Device | Target | None = "cuda",
    budget: int | str | None = None,
    **fields: Any,
) -> LayoutPlan:
    """:func:`plan_layouts` with the workload and target resolved as every API function
    does (the twin of ``memlens fit MODEL --gpus N``)."""
    from memlens._setup import prepare

    w, target = prepare(workload, {"analytic": True, **fields}, "fit", device=device, budget=budget)
    return plan_layouts(model, w, target, gpus)
