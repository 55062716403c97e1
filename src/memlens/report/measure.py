"""The figures of a real run: peaks, what was alive before the step, the first step."""

from __future__ import annotations

from rich.table import Table

from memlens.measurement.result import Measurement
from memlens.report._style import titled_table
from memlens.units import fmt_bytes


def measurement_table(m: Measurement) -> Table:
    """One row per measured figure (CUDA adds the reserved peak and NVML's process total)."""
    table = titled_table(f"Measured on {m.device_name or m.device}", "figure", "bytes>", "size>")
    figures = [("peak allocated", m.peak_bytes), ("alive before the step", m.baseline_bytes)]
    if m.device == "cuda":
        figures.insert(1, ("peak reserved", m.reserved_peak_bytes))
        if m.process_bytes is not None:
            figures.append(("process total (NVML)", m.process_bytes))
    if m.first_step_peak_bytes is not None:
        figures.append(("first step peak", m.first_step_peak_bytes))
    for name, n in figures:
        table.add_row(name, f"{n:,}", fmt_bytes(n))
    table.caption = f"one steady-state step took {m.step_seconds:.2f} s"
    return table
