"""The budget table: one row per category at the peak, its share of the device, a verdict."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memlens._results import Estimate
from memlens.categories import Category
from memlens.measurement.result import Measurement
from memlens.report._style import header_line, step, titled_table
from memlens.report.compare import comparison_table
from memlens.report.host import host_table
from memlens.report.strategies import strategy_lines
from memlens.units import fmt_bytes, fmt_count, fmt_decimal


def _share(n: int, capacity: int | None) -> str:
    return f"{100 * n / capacity:5.1f}%" if capacity else ""


def budget_table(est: Estimate) -> Table:
    """Category rows with bytes and share of the device, then total, buffer and capacity."""
    cap = est.capacity_bytes
    table = titled_table(
        "Memory budget at the peak (binary units: 1 MiB = 2^20 bytes)",
        *("category", "bytes>", "size>", "of device>"),
    )
    for cat, n in est.budget():
        if n == 0:
            continue
        table.add_row(cat.value, f"{n:,}", fmt_bytes(n), _share(n, cap))
        if cat is Category.FRAMEWORK_OVERHEAD:  # explained: context, library workspaces
            for label, part in est.overheads():
                table.add_row(
                    Text(f"  {label}", style="dim"), f"{part:,}", fmt_bytes(part), _share(part, cap)
                )
    table.add_section()
    total = est.total_bytes
    table.add_row(
        Text("total used", style="bold"), f"{total:,}", fmt_bytes(total), _share(total, cap)
    )
    if cap is not None:
        free = cap - total
        label = "available buffer" if free >= 0 else "shortfall"
        table.add_row(label, f"{free:,}", fmt_bytes(free), _share(free, cap))
        table.add_row("device capacity", f"{cap:,}", fmt_bytes(cap), "100.0%")
    return table


def header(est: Estimate) -> Text:
    w = est.workload
    head = [f"{est.model} ({est.source})", f"{fmt_count(est.num_params)} parameters"]
    target = est.device.name if est.device is not None else "a generic GPU"
    settings = est.strategies.get("settings") or {}
    precision = settings.get("precision", "")
    shown = precision if " from " in precision else None  # a checkpoint's own dtype
    return header_line([*head, step(w), f"batch {w.batch}"], w, [f"on {target}"], shown)


def verdict(est: Estimate) -> Text:
    where = f"peak in {est.peak_phase}"
    if est.peak_module:
        where += f" at {est.peak_module}"
    if est.peak_op:
        where += f" ({est.peak_op})"
    lines = Text()
    if est.fits is None:
        lines.append("no device capacity given: pass --gpu NAME or --budget SIZE for a verdict\n")
    elif est.tight:
        free, cap = est.free_bytes or 0, est.capacity_bytes or 1
        lines.append(f"TIGHT: fits with only {fmt_bytes(free)} free", style="bold yellow")
        lines.append(
            f" ({free / cap:.1%} of the device, under the {est.workload.headroom:.0%} headroom:"
            " fragmentation or another process can tip it over)\n"
        )
    elif est.fits:
        free = est.free_bytes or 0
        lines.append(f"FITS with {fmt_bytes(free)} free", style="bold green")
        lines.append(f" ({fmt_decimal(free)} decimal)\n")
    else:
        short = -(est.free_bytes or 0)
        lines.append(f"DOES NOT FIT: short by {fmt_bytes(short)}", style="bold red")
        lines.append(f" ({fmt_decimal(short)} decimal)\n")
    lines.append(where + "\n")
    lines.append(f"allocated peak {fmt_bytes(est.peak_bytes)}")
    lines.append(f", reserved peak {fmt_bytes(est.reserved_peak_bytes)}")
    if est.first_step_peak_bytes is not None:
        lines.append(f"; first training step peak {fmt_bytes(est.first_step_peak_bytes)}")
    lines.append(f"; traced in {est.seconds:.2f} s")
    for unknown in est.unknowns:
        lines.append(f"\nnote: {unknown}", style="yellow")
    return lines


def render_estimate(est: Estimate, measured: Measurement | None = None) -> RenderableType:
    """Header, budget table and verdict of one estimate, then what its strategies did, its
    host memory, and its comparison with a real run (``measured``) where there are any."""
    parts: list[RenderableType] = [header(est), budget_table(est), verdict(est)]
    summary = strategy_lines(est)
    if summary is not None:
        parts.append(summary)
    if est.host is not None:
        parts.append(host_table(est.host))
    if measured is not None:
        parts.append(comparison_table(est, measured))
    return Group(*_spaced(parts))


def _spaced(parts: list[RenderableType]) -> list[RenderableType]:
    """``parts`` with a blank line between each two."""
    out: list[RenderableType] = []
    for part in parts:
        out += [Text(""), part] if out else [part]
    return out
