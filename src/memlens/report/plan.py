"""Planning reports: the largest batch and the ranked options (``fit``), memory against batch
size (``sweep``) as a table and a plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memlens._errors import MissingExtraError
from memlens.categories import Category
from memlens.plan import FitResult, Option, StrategySearch, SweepResult
from memlens.report._style import header_line, step, titled_table
from memlens.units import fmt_bytes


def _share(n: int, capacity: int | None) -> str:
    return f"{100 * n / capacity:.1f}%" if capacity else ""


def max_batch_summary(result: FitResult) -> Text:
    """The answer, the two traced batches that prove it, and what the search cost."""
    cap = result.capacity_bytes
    text = Text()
    if result.max_batch == 0:
        need = result.at_max.total_bytes
        text.append("Not even batch 1 fits", style="bold red")
        text.append(f": it needs {fmt_bytes(need)}, short by {fmt_bytes(need - cap)}\n")
    elif not result.search.bounded:
        text.append(f"Batch {result.max_batch} fits", style="bold green")
        text.append(
            f" ({fmt_bytes(result.at_max.total_bytes)} of {fmt_bytes(cap)}): the search stopped"
            " at its cap, a larger batch may fit too\n"
        )
    else:
        at, above = result.at_max, result.above
        text.append(f"Max batch size: {result.max_batch}", style="bold green")
        text.append(
            f"  (batch {result.max_batch} needs {fmt_bytes(at.total_bytes)} of {fmt_bytes(cap)},"
            f" {fmt_bytes(cap - at.total_bytes)} free"
        )
        if above is not None:
            text.append(
                f"; batch {result.max_batch + 1} needs {fmt_bytes(above.total_bytes)},"
                f" short by {fmt_bytes(above.total_bytes - cap)}"
            )
        text.append(")\n")
    probes = ", ".join(str(p.batch) for p in result.search.probes)
    text.append(
        f"found in {result.search.traces} traces (batches {probes});"
        f" {result.traces} traces in all, {result.seconds:.1f} s"
        f" (one trace ≈ {result.seconds_per_trace:.1f} s)",
        style="dim",
    )
    return text


def _compute(option: Option) -> str:
    parts = []
    if option.compute_overhead:
        parts.append(f"{100 * option.compute_overhead:+.0f}%")
    if option.micro_steps > 1:
        parts.append(f"{option.micro_steps} passes")
    if option.pcie_bytes:
        parts.append(f"{fmt_bytes(option.pcie_bytes)} PCIe/step")
    return ", ".join(parts) or "none"


def strategy_table(search: StrategySearch, capacity: int) -> Table:
    """The combinations that fit at the target batch, cheapest first."""
    table = titled_table(
        f"Options for batch {search.target_batch}, cheapest first",
        *("#>", "strategy", "per pass", "memory>", "of device>", "compute", "risk"),
    )
    for i, o in enumerate(search.fitting, 1):
        table.add_row(
            str(i),
            o.label,
            f"batch {o.micro_batch}",
            fmt_bytes(o.total_bytes),
            _share(o.total_bytes, capacity),
            _compute(o),
            str(o.risk),
        )
    table.caption = (
        "compute: extra work per step (a training step ≈ 3 forward passes; checkpointing"
        " re-runs the forward); risk to accuracy: none < low < some"
    )
    table.caption_justify = "left"
    return table


def strategy_notes(search: StrategySearch, capacity: int) -> Text:
    """What did not fit, could not be tried, or was not reached."""
    text = Text()
    base = search.baseline
    if base is not None and not base.fits:
        text.append(
            f"As given, batch {search.target_batch} needs {fmt_bytes(base.total_bytes)},"
            f" short by {fmt_bytes(base.total_bytes - capacity)}\n"
        )
    if not search.fitting:
        text.append(f"Nothing tried fits at batch {search.target_batch}", style="bold red")
        if search.closest is not None:
            c = search.closest
            text.append(
                f"; closest: {c.label} needs {fmt_bytes(c.total_bytes)},"
                f" short by {fmt_bytes(c.total_bytes - capacity)}"
            )
        text.append("\n")
    if search.no_saving and base is not None:
        text.append(
            "left out, no saving alone: "
            + ", ".join(
                f"{o.label} (+{fmt_bytes(o.total_bytes - base.total_bytes)})"
                for o in search.no_saving
            )
            + "\n"
        )
    if search.unavailable:
        text.append("not available in this memlens: " + ", ".join(search.unavailable) + "\n")
    for failure in search.failed:
        text.append(f"could not trace {failure}\n", style="yellow")
    if not search.exhausted:
        text.append("stopped at the trace budget; cheaper options may be missing\n")
    text.append(f"{search.traces} traces for the options", style="dim")
    return text


def render_fit(result: FitResult) -> RenderableType:
    """Header, the largest batch, and the options table with its notes."""
    parts: list[RenderableType] = [
        header_line(
            [result.model, step(result.workload)],
            result.workload,
            [f"on {result.device.name} ({fmt_bytes(result.capacity_bytes)})"],
        ),
        Text(""),
        max_batch_summary(result),
    ]
    search = result.strategies
    if search is not None:
        parts.append(Text(""))
        if search.fitting:
            parts += [strategy_table(search, result.capacity_bytes), Text("")]
        parts.append(strategy_notes(search, result.capacity_bytes))
    return Group(*parts)


def _categories(result: SweepResult) -> list[Category]:
    """Budget categories that are not zero at some batch."""
    return [
        cat
        for cat in Category
        if any(n for e in result.estimates for c, n in e.budget() if c is cat)
    ]


def _sweep_unit(largest: int) -> tuple[str, int, int]:
    """(unit, its bytes, decimals) showing ``largest`` with three or four digits."""
    unit, factor = next((u, f) for u, f in _UNITS if largest >= f or f == 2**10)
    value = largest / factor
    return unit, factor, 2 if value < 10 else 1 if value < 100 else 0


_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def sweep_table(result: SweepResult) -> Table:
    """One column per batch: allocated and reserved peaks, total, share of the device, and
    the breakdown at the peak, in one unit (the largest total's: GiB, MiB or KiB)."""
    cap = result.capacity_bytes
    unit, factor, digits = _sweep_unit(max(e.total_bytes for e in result.estimates))

    def size(n: int) -> str:
        return f"{n / factor:,.{digits}f}"

    table = titled_table(
        f"{result.model}: memory at the peak against batch size ({unit})",
        *("batch", *(f"{b}>" for b in result.batches)),
    )
    est = result.estimates
    table.add_row("allocated peak", *(size(e.peak_bytes) for e in est))
    table.add_row("reserved peak", *(size(e.reserved_peak_bytes) for e in est))
    table.add_row(
        Text("total", style="bold"),
        *(Text(size(e.total_bytes), style="bold red" if e.fits is False else "bold") for e in est),
    )
    if cap is not None:
        table.add_row("of device", *(_share(e.total_bytes, cap) for e in est))
    table.add_section()
    budgets = [dict(e.budget()) for e in est]
    for cat in _categories(result):
        table.add_row(cat.value, *(size(b[cat]) for b in budgets))
    context = " + runtime context" if any(e.context_bytes for e in est) else ""
    caption = f"total = reserved{context} = the sum of the categories"
    if cap is not None:
        caption += f"; capacity {fmt_bytes(cap)}, totals over it in red"
    table.caption = caption
    table.caption_justify = "left"
    return table


def render_sweep(result: SweepResult, plot: Path | None = None) -> RenderableType:
    """The sweep table, and where the plot was written, if any."""
    if plot is None:
        return sweep_table(result)
    return Group(sweep_table(result), Text(f"plot written to {plot}"))


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """Stacked categories, the allocated peak and the capacity against batch size, to ``path``."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "plotting a sweep") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gib = 2**30
    batches = result.batches
    cats = _categories(result)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.stackplot(
        batches,
        [[dict(e.budget())[c] / gib for e in result.estimates] for c in cats],
        labels=[c.value.replace("_", " ") for c in cats],
        alpha=0.8,
    )
    ax.plot(
        batches,
        [e.peak_bytes / gib for e in result.estimates],
        "k--",
        marker="o",
        label="allocated peak",
    )
    if result.capacity_bytes is not None:
        name = result.device.name if result.device is not None else "device"
        ax.axhline(result.capacity_bytes / gib, color="red", label=f"{name} capacity")
    if len(batches) > 2 and batches[-1] >= 16 * batches[0]:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("GiB")
    ax.set_title(f"{result.model}: memory at the peak against batch size")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
