"""The closed-form estimate of a model by name: the workload and target resolved as every API
function does (:func:`memlens._setup.prepare`), then
:func:`memlens.analytic.layout.estimate_layout`."""

from __future__ import annotations

from typing import Any

from memlens.analytic.layout import LayoutEstimate, estimate_layout
from memlens.analytic.transformer import load_shape
from memlens.devices import Device
from memlens.targets import Target
from memlens.workload import Workload

#: The sequence length memlens gives language models when none is set
#: (``memlens.sources.huggingface.DEFAULT_SEQ_LEN``, capped at the model's positions).
DEFAULT_SEQ_LEN = 512


def analytic_estimate(
    model: str | dict[str, Any],
    workload: Workload | None = None,
    *,
    device: str | Device | Target | None = "cuda",
    budget: int | str | None = None,
    method: str = "closed form (--analytic)",
    **fields: Any,
) -> LayoutEstimate:
    """Per-GPU memory of ``model`` (a bundled LLM name, a ``config.json`` path or dict) under
    the workload's parallel layout, in closed form."""
    from memlens._setup import prepare

    fields = {"analytic": True, **fields}
    w, target = prepare(workload, fields, "estimate", device=device, budget=budget)
    shape = load_shape(model)
    if w.seq_len is None:
        w = w.with_(seq_len=DEFAULT_SEQ_LEN)
    workspace = 2 * target.workspace_bytes if target.kind == "cuda" else 0
    est = estimate_layout(
        shape,
        w,
        device=target.device,
        target_kind=target.kind,
        context_bytes=target.context_bytes,
        workspace_bytes=workspace,
        method=method,
    )
    if target.kind == "cuda" and w.layout.distributed:
        from memlens.distributed.nccl import ASSUMPTION, nccl_lines

        est.nccl = nccl_lines(w.layout, est.worst.stage)
        est.unknowns.append(ASSUMPTION)
    est.unknowns.extend(target.assumptions)
    return est
