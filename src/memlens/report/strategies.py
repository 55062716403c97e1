"""What the strategies of an estimate did, in a few lines: checkpointed blocks and their
recompute cost, micro-batch and effective batch, frozen, adapter and quantised parameters."""

from __future__ import annotations

from rich.text import Text

from memlens._results import Estimate
from memlens.units import fmt_count


def strategy_lines(est: Estimate) -> Text | None:
    """The strategy summary of ``est`` (``None`` when no strategy was applied)."""
    s, w = est.strategies, est.workload
    lines: list[str] = []
    groups = s.get("checkpointed", [])
    if groups:
        blocks = sum(len(g) for g in groups)
        shown = ", ".join("+".join(g) for g in groups[:4]) + (", ..." if len(groups) > 4 else "")
        lines.append(
            f"checkpointing {blocks} block(s) in {len(groups)} segment(s) ({shown}): "
            f"+{100 * est.recompute_share:.1f}% compute "
            f"({fmt_count(est.recompute_flops)} FLOPs recomputed)"
        )
    if w.grad_accum > 1:
        lines.append(
            f"gradient accumulation: {w.grad_accum} micro-batches of {w.batch}, "
            f"effective batch {w.effective_batch}"
        )
    if s.get("frozen_params"):
        lines.append(f"frozen: {fmt_count(s['frozen_params'])} parameters")
    if s.get("lora_params"):
        lines.append(f"LoRA adapters: {fmt_count(s['lora_params'])} trainable parameters")
    if s.get("quantized_layers"):
        lines.append(f"{w.quantize}: {s['quantized_layers']} linear layers quantised")
    if w.offload_optimizer:
        lines.append("optimizer state, fp32 master weights and gradients offloaded to the host")
    if not lines:
        return None
    return Text("\n".join(lines))
