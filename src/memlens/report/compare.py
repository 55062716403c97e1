"""Estimate next to a real run's measurement."""

from __future__ import annotations

from rich.table import Table

from memlens._results import Estimate
from memlens.measurement.compare import error
from memlens.measurement.result import Measurement
from memlens.report._style import titled_table
from memlens.units import fmt_bytes


def comparison_table(est: Estimate, m: Measurement) -> Table:
    """Rows of estimated vs measured peaks with the signed error."""
    table = titled_table(
        f"Estimate vs real run on {m.device_name or m.device}",
        *("figure", "estimated>", "measured>", "error>"),
    )
    rows = [("peak allocated", est.peak_bytes, m.peak_bytes)]
    if m.device == "cuda":
        rows.append(("peak reserved", est.reserved_peak_bytes, m.reserved_peak_bytes))
        if m.process_bytes is not None:
            rows.append(("process total", est.total_bytes, m.process_bytes))
    if est.first_step_peak_bytes is not None and m.first_step_peak_bytes is not None:
        rows.append(("first step peak", est.first_step_peak_bytes, m.first_step_peak_bytes))
    for name, e, r in rows:
        table.add_row(name, fmt_bytes(e), fmt_bytes(r), f"{100 * error(e, r):+.2f}%")
    table.caption = f"real step {m.step_seconds:.2f} s; estimate {est.seconds:.2f} s"
    return table
