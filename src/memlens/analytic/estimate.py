"""The closed-form estimate of a model by name: the workload and target resolved as every API
function does (:func:`memlens._setup.prepare`), then
:func:`memlens.analytic.layout.estimate_layout`."""

from __future__ import annotations

from typing import Any

from memlens._errors import ConfigError
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


#: Parameters above which a parallel layout is answered in closed form unless tracing is
#: asked for (``analytic=False``): the trace of one rank of a 70B model takes minutes.
AUTO_PARAMS = 20_000_000_000


def closed_form_reason(model: Any, w: Workload) -> str | None:
    """Why ``w`` is answered in closed form (said in the output), or None to trace it."""
    if w.analytic:
        return "closed form (--analytic)"
    if w.deepspeed is not None:
        return "closed form (DeepSpeed ZeRO is modelled in closed form)"
    if w.sequence_parallel:
        return "closed form (sequence parallelism is modelled in closed form)"
    if w.analytic is None and w.training and w.layout.distributed:
        params = _known_params(model)
        if params is not None and params > AUTO_PARAMS:
            return (
                f"closed form: {params / 1e9:.1f}B parameters take minutes to trace "
                "(--traced traces)"
            )
    return None


def _known_params(model: Any) -> int | None:
    """The parameter count of a bundled LLM name or a config.json, without building it."""
    if isinstance(model, dict) or (isinstance(model, str) and model.endswith(".json")):
        try:
            return load_shape(model).num_params
        except ConfigError:
            return None
    if not isinstance(model, str):
        return None
    from memlens.sources import bundled, registry

    name = registry._canonical(bundled, model)
    return None if name is None else int(bundled.names()[name]["params"])
