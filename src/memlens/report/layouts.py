"""Closed-form answers under a parallel layout: the per-stage budget of a
:class:`~memlens.analytic.layout.LayoutEstimate`, and the layouts ``memlens fit --gpus``
ranks (:class:`~memlens.plan.layouts.LayoutPlan`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.text import Text

from memlens.report._style import header_line, step, titled_table
from memlens.units import fmt_bytes

if TYPE_CHECKING:
    from memlens.analytic.layout import LayoutEstimate
    from memlens.plan.layouts import LayoutPlan

#: Budget columns, in category order (a column is shown when any stage has bytes in it).
_COLUMNS = (
    ("parameters", "params"),
    ("gradients", "grads"),
    ("optimizer_state", "optim"),
    ("activations", "acts"),
    ("temporaries", "temps"),
    ("collectives", "comm"),
)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def layout_text(est: LayoutEstimate) -> str:
    """``dp 16 (deepspeed ZeRO-1) x tp 8 (sp) x pp 8 (1f1b, 8 micro-batches) x cp 1 = 1024``."""
    lay, w = est.layout, est.workload
    dp = f"dp {lay.dp}"
    if w.deepspeed is not None:
        dp += f" (deepspeed ZeRO-{w.deepspeed.stage})"
    elif lay.fsdp != "none":
        dp += f" (fsdp {lay.fsdp})"
    elif lay.ddp:
        dp += " (ddp)"
    tp = f"tp {lay.tp}" + (" (sp)" if w.sequence_parallel else "")
    pp = f"pp {lay.pp}" + (
        f" ({lay.pp_schedule}, {lay.microbatches} micro-batches)" if lay.pp > 1 else ""
    )
    return f"{dp} x {tp} x {pp} x cp {lay.cp} = {lay.world_size} GPUs"


def render_layout_estimate(est: LayoutEstimate) -> RenderableType:
    """The header, one row per pipeline stage, the worst GPU's total and the communication."""
    w = est.workload
    head = header_line(
        [f"{est.model} ({est.num_params / 1e9:.2f}B)", f"batch {w.batch}"],
        w,
        [step(w), f"checkpoint {w.checkpoint}"],
    )
    shown = [(k, name) for k, name in _COLUMNS if any(s.breakdown.get(k) for s in est.stages)]
    table = titled_table(
        f"Per GPU, by pipeline stage ({est.stages[0].ranks_alike} GPUs each; GiB = 2^30 bytes)",
        "stage",
        "layers>",
        "flight>",
        *(f"{name}>" for _, name in shown),
        "peak>",
        "peak in",
        *(["host>"] if any(s.host_bytes for s in est.stages) else []),
    )
    worst = est.worst
    for s in est.stages:
        row = [
            str(s.stage) + ("*" if s is worst else ""),
            str(s.layers),
            str(s.in_flight),
            *(_gib(s.breakdown.get(k, 0)) for k, _ in shown),
            _gib(s.peak_bytes),
            s.peak_phase,
        ]
        if any(x.host_bytes for x in est.stages):
            row.append(_gib(s.host_bytes))
        table.add_row(*row)
    lines: list[RenderableType] = [
        head,
        Text(f"layout: {layout_text(est)} · answered in {est.method}", style="dim"),
        table,
    ]
    outside = [("CUDA context", est.context_bytes), *est.nccl]
    total = f"worst GPU (stage {worst.stage}): {fmt_bytes(worst.peak_bytes)} allocated"
    total += "".join(f" + {fmt_bytes(n)} {name}" for name, n in outside if n)
    total += f" = {fmt_bytes(est.total_bytes)}"
    if est.capacity_bytes is not None:
        verdict = "fits" if est.fits else "does NOT fit"
        total += f" of {fmt_bytes(est.capacity_bytes)} ({est.device.name}): {verdict}"
    lines.append(Text(total, style="bold"))
    c = est.communication
    lines.append(
        Text(
            f"communication per GPU and step: data parallel {fmt_bytes(c.data_parallel)}, "
            f"tensor parallel {fmt_bytes(c.tensor_parallel)}, pipeline {fmt_bytes(c.pipeline)}, "
            f"context parallel {fmt_bytes(c.context_parallel)}; pipeline bubble {c.bubble:.1%}"
        )
    )
    lines += [Text(f"unknown: {u}", style="dim") for u in est.unknowns]
    return Group(*lines)


def render_layout_plan(plan: LayoutPlan, top: int = 15) -> RenderableType:
    """The layouts that fit, best first, each with its largest micro-batch."""
    w = plan.workload
    head = header_line(
        [f"{plan.model} ({plan.num_params / 1e9:.2f}B) on {plan.gpus} x {plan.device.name}"],
        w,
        [step(w)],
    )
    table = titled_table(
        f"Layouts that fit, best first ({len(plan.fits)} of {plan.considered})",
        "#>",
        "dp.tp.pp.cp",
        "shard",
        "ckpt",
        "micro>",
        "peak GiB>",
        "sent GiB>",
        "DP GiB>",
        "bubble>",
    )
    for i, row in enumerate(plan.fits[:top], 1):
        table.add_row(
            str(i),
            f"{row.dp}.{row.tp}.{row.pp}.{row.cp}",
            row.sharding.removeprefix("fsdp "),
            row.checkpoint,
            str(row.micro_batch),
            f"{row.peak_bytes / 2**30:.1f}",
            f"{row.comm_bytes / 2**30:.1f}",
            f"{row.gather_scatter_bytes / 2**30:.1f}",
            f"{row.bubble:.1%}",
        )
    lines: list[RenderableType] = [
        head,
        Text(
            f"answered in closed form ({plan.seconds:.2f} s for {plan.considered} layouts); "
            "shard: ddp, fsdp full or grad-op, zero-N; micro: the largest micro-batch per GPU; "
            "peak: the worst GPU's device total; sent: what each GPU sends per step (DP: "
            "its data-parallel collectives); GiB = 2^30 bytes",
            style="dim",
        ),
        table,
    ]
    if not plan.fits:
        lines.append(
            Text(
                "no layout fits: more GPUs, a shorter sequence or fewer bytes per parameter",
                style="bold red",
            )
        )
    lines += [Text(f"note: {n}", style="dim") for n in plan.notes]
    return Group(*lines)
