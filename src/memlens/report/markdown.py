"""A result's budget and verdict as a compact table: :func:`to_markdown` (for a pull request
or an issue) and :func:`to_html_fragment` (a notebook's ``_repr_html_``), both from one
:class:`Summary` so they say the same thing.

Example usage::

    est = memlens.estimate("resnet18", batch=8, device="a100-40gb")
    print(to_markdown(est))
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from memlens.units import fmt_bytes


@dataclass
class Summary:
    """A headline, one table (the last column right-aligned numbers) and notes."""

    headline: str  # may hold **bold** and `code` (Markdown); the HTML fragment converts them
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    bold_last: bool = False  # the last row is a total


def summarize(result: Any) -> Summary:
    """The summary of an estimate, fit, sweep or layers report."""
    from memlens import __version__

    kind = type(result).__name__
    make = {
        "Estimate": _estimate,
        "FitResult": _fit,
        "SweepResult": _sweep,
        "LayerReport": _layers,
        "ServePlan": _serve_plan,
    }.get(kind)
    if make is None:
        raise TypeError(f"{kind} has no Markdown summary")
    out = make(result)
    out.notes.append(f"memlens {__version__}")
    return out


def _device(result: Any) -> str:
    device = getattr(result, "device", None)
    return f" on {device.name}" if device is not None else ""


def _step(w: Any) -> str:
    return f"{w.mode}, batch {w.batch}, {w.precision}" + (f", {w.optimizer}" if w.training else "")


def _verdict(est: Any) -> str:
    if est.fits is None:
        return f"**{fmt_bytes(est.total_bytes)}** in total"
    cap = fmt_bytes(est.capacity_bytes)
    if est.fits:
        free = fmt_bytes(est.free_bytes)
        word = "tight" if getattr(est, "tight", False) else "fits"  # under the headroom
        return f"**{word}**: {fmt_bytes(est.total_bytes)} of {cap} ({free} free)"
    return f"**does not fit**: {fmt_bytes(est.total_bytes)} of {cap} (short by " + (
        f"{fmt_bytes(-est.free_bytes)})"
    )


def _estimate(est: Any) -> Summary:
    total = est.total_bytes
    rows = [
        [cat.value.replace("_", " "), fmt_bytes(n), f"{100 * n / total:.1f}%"]
        for cat, n in est.budget()
        if n
    ]
    rows.append(["total", fmt_bytes(total), "100.0%"])
    peak = (
        f"peak allocated {fmt_bytes(est.peak_bytes)} in {est.peak_phase} at "
        f"`{est.peak_module or '<root>'}` (`{est.peak_op}`)"
    )
    unknowns = f"{len(est.unknowns)} assumptions listed in the JSON/HTML" if est.unknowns else ""
    return Summary(
        headline=f"**memlens estimate** `{est.model}`{_device(est)} ({_step(est.workload)}): "
        + _verdict(est),
        headers=["category", "bytes", "share"],
        rows=rows,
        notes=[n for n in (peak, unknowns) if n],
        bold_last=True,
    )


def _fit(fit: Any) -> Summary:
    st = fit.strategies
    options = (st.fitting or ([st.closest] if st.closest else [])) if st else []
    rows = [
        [
            o.label,
            f"{o.micro_batch} x {o.micro_steps}",
            "yes" if o.fits else "no",
            fmt_bytes(o.total_bytes),
        ]
        for o in options
    ]
    target = f"; options for batch {st.target_batch}" if st else ""
    return Summary(
        headline=f"**memlens fit** `{fit.model}`{_device(fit)}: largest batch that fits "
        f"**{fit.max_batch}** ({fmt_bytes(fit.at_max.total_bytes)} of "
        f"{fmt_bytes(fit.capacity_bytes)}){target}",
        headers=["option", "micro-batch x steps", "fits", "total"],
        rows=rows,
    )


def _sweep(sweep: Any) -> Summary:
    rows = [
        [
            str(e.workload.batch),
            fmt_bytes(e.peak_bytes),
            fmt_bytes(e.reserved_peak_bytes),
            "" if e.fits is None else ("yes" if e.fits else "no"),
            fmt_bytes(e.total_bytes),
        ]
        for e in sweep.estimates
    ]
    cap = f" (capacity {fmt_bytes(sweep.capacity_bytes)})" if sweep.capacity_bytes else ""
    return Summary(
        headline=f"**memlens sweep** `{sweep.model}`{_device(sweep)}{cap}",
        headers=["batch", "peak allocated", "peak reserved", "fits", "total"],
        rows=rows,
    )


def _layers(report: Any) -> Summary:
    rows = [
        [r.path, r.type, f"{r.params:,}", fmt_bytes(r.saved_bytes), fmt_bytes(r.weight_bytes)]
        for r in report.rows
        if r.path
    ]
    return Summary(
        headline=f"**memlens layers** `{report.model}`: {report.num_params:,} parameters "
        f"({report.dtype} weights)",
        headers=["layer", "type", "params", "saved for backward", "weights"],
        rows=rows,
    )


def _serve_plan(plan: Any) -> Summary:
    rows = [
        ["GPU memory", fmt_bytes(plan.total_bytes)],
        [
            f"x gpu_memory_utilization {plan.gpu_memory_utilization}",
            fmt_bytes(plan.requested_bytes),
        ],
        [f"- weights ({plan.scheme})", fmt_bytes(plan.weights.total_bytes)],
        ["- activation peak", fmt_bytes(plan.activation_bytes)],
        ["= KV cache memory", fmt_bytes(plan.kv_available_bytes)],
        ["cache blocks", f"{plan.num_blocks:,}"],
        ["cached tokens", f"{plan.cached_tokens:,}"],
        [f"concurrent requests of {plan.max_model_len:,} tokens", f"{plan.concurrency:.2f}"],
    ]
    verdict = "**serves**" if plan.fits else "**does not serve one request**"
    return Summary(
        headline=f"**memlens serve-plan** `{plan.model}` on {plan.device}, tp {plan.tp}: {verdict}",
        headers=["term", "value"],
        rows=rows,
    )


def to_markdown(result: Any) -> str:
    """The summary as Markdown: a headline, a table, notes."""
    s = summarize(result)
    align = ["---"] + ["---:"] * (len(s.headers) - 1)
    lines = [s.headline, "", _md_row(s.headers), _md_row(align)]
    for i, row in enumerate(s.rows):
        last = s.bold_last and i == len(s.rows) - 1
        lines.append(_md_row([f"**{c}**" if last else c for c in row]))
    if s.notes:
        lines += ["", "; ".join(s.notes)]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_html_fragment(result: Any) -> str:
    """The summary as a small static HTML fragment (no scripts), for Jupyter."""
    s = summarize(result)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in s.headers)
    body = []
    for i, row in enumerate(s.rows):
        tag = "th" if s.bold_last and i == len(s.rows) - 1 else "td"
        cells = "".join(
            f'<{tag} style="text-align:{"left" if j == 0 else "right"}">{html.escape(c)}</{tag}>'
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    notes = "".join(f"<br><small>{_inline(n)}</small>" for n in s.notes)
    return (
        f"<div><p>{_inline(s.headline)}</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{notes}</div>"
    )


def _inline(text: str) -> str:
    """``**bold**`` and ```code``` of a Markdown line as HTML (everything else escaped)."""
    out, bold, code = [], False, False
    for token in _tokens(text):
        if token == "**" and not code:
            out.append("</b>" if bold else "<b>")
            bold = not bold
        elif token == "`":
            out.append("</code>" if code else "<code>")
            code = not code
        else:
            out.append(html.escape(token))
    return "".join(out)


def _tokens(text: str) -> list[str]:
    out, i, start = [], 0, 0
    while i < len(text):
        mark = "**" if text.startswith("**", i) else "`" if text[i] == "`" else ""
        if mark:
            out += [text[start:i], mark]
            i += len(mark)
            start = i
        else:
            i += 1
    out.append(text[start:])
    return [t for t in out if t]
