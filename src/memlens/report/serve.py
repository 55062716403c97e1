"""A serving plan (:mod:`memlens.plan.serve`) as vLLM's startup arithmetic, one term a row."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memlens.plan.serve import ServePlan
from memlens.report._style import titled_table
from memlens.units import fmt_bytes


def serve_table(plan: ServePlan) -> RenderableType:
    """The plan: memory terms down to the KV cache, then blocks, tokens and concurrency."""
    w = plan.weights
    gpus = f"{plan.tp} x {plan.device}" if plan.tp > 1 else plan.device
    table = titled_table(
        f"{plan.model} served by vLLM on {gpus}: one GPU's memory",
        "step",
        "term",
        "bytes>",
        "how",
    )
    number = iter(range(1, 100))

    def add(term: str, value: str, how: str, *, step: bool = True) -> None:
        table.add_row(str(next(number)) if step else "", term, value, how)

    util = plan.gpu_memory_utilization
    add("GPU memory", fmt_bytes(plan.total_bytes), f"{plan.device} catalog ({plan.arch})")
    add(f"x gpu_memory_utilization {util:g}", fmt_bytes(plan.requested_bytes), "requested")
    weights_how = f"{plan.scheme} ({plan.scheme_source}); {w.method}"
    if w.metadata_bytes or w.kept_bytes and w.payload_bytes:
        weights_how += (
            f"; payload {fmt_bytes(w.payload_bytes)}, scales/zeros {fmt_bytes(w.metadata_bytes)}"
            f", kept {fmt_bytes(w.kept_bytes)}"
        )
    if plan.tp > 1:
        weights_how += f"; 1/{plan.tp} by tensor parallelism"
    add("- weights", fmt_bytes(w.total_bytes), weights_how)
    for term in plan.buffers:
        add(f"- {term.name}", fmt_bytes(term.bytes), term.note)
    for term in plan.activation_terms:
        add(f"  {term.name}", fmt_bytes(term.bytes), term.note, step=False)
    add(
        "- activation peak",
        fmt_bytes(plan.activation_bytes),
        f"{plan.activation_method}: max(forward blocks, sampler) + the rest",
    )
    add("- non-torch increase", fmt_bytes(0), "kernel modules, handles: not modelled")
    add(
        "= KV cache memory",
        fmt_bytes(plan.kv_available_bytes),
        "requested - weights - buffers - activation peak",
    )
    block = plan.page_bytes * (plan.kv_layers if plan.kv_groups == 1 else 1)
    per_block = (
        f"{plan.block_size} tokens x {plan.kv_layers} layers, {plan.kv_dtype}"
        if plan.kv_groups == 1
        else f"{plan.block_size} tokens x 1 layer, {plan.kv_dtype}; {plan.kv_groups} groups"
    )
    add("/ one block", fmt_bytes(block), per_block)
    table.add_section()
    add("= cache blocks", f"{plan.num_blocks:,}", "num_gpu_blocks")
    add("cached tokens", f"{plan.cached_tokens:,}", "blocks x block size (per group)")
    add(
        f"concurrent requests of {plan.max_model_len:,} tokens",
        f"{plan.concurrency:.2f}",
        f"blocks / {plan.request_blocks:,} blocks per request",
    )
    if plan.avg_len is not None and plan.concurrency_avg is not None:
        add(
            f"concurrent requests of {plan.avg_len:,} tokens",
            f"{plan.concurrency_avg:.2f}",
            "average length",
        )
    add("largest context, one request", f"{plan.largest_context:,}", "at most the positions")
    if plan.target_concurrency is not None:
        found = f"tp={plan.min_tp}" if plan.min_tp else "none up to 64"
        length = plan.avg_len or plan.max_model_len
        add(f"smallest tp for {plan.target_concurrency} requests of {length:,}", found, "")
    table.add_section()
    for term in plan.outside_budget:
        add(f"outside the budget: {term.name}", fmt_bytes(term.bytes), term.note, step=False)
    spare = plan.total_bytes - plan.requested_bytes
    held = sum(t.bytes for t in plan.outside_budget)
    verdict = "starts" if plan.startup_ok else "REFUSED at startup"
    add(
        f"startup check: {verdict}",
        fmt_bytes(spare),
        f"GPU - requested must hold the {fmt_bytes(held)} above",
        step=False,
    )
    notes = Table.grid(padding=(0, 1))
    for u in plan.unknowns:
        notes.add_row("-", u)
    fits = "" if plan.fits else " One request of max_model_len does not fit."
    return Group(
        table,
        Text(f"Method: vLLM's startup profiling, step by step (memlens.plan.serve).{fits}"),
        Text("Assumptions and unknowns:", style="bold"),
        notes,
    )
