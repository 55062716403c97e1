"""A model's size in every weight format, as a table."""

from __future__ import annotations

from rich.table import Table

from memlens._size import SizeReport
from memlens.report._style import titled_table
from memlens.units import fmt_bytes, fmt_decimal


def size_table(report: SizeReport) -> Table:
    """One row per format: payload, metadata, kept bytes, and the total in both units."""
    keep = ", ".join(report.keep) or "nothing"
    meta = f"group size {report.group_size}" if report.metadata else "no quantisation metadata"
    table = titled_table(
        f"{report.model}: {report.num_params:,} parameters ({meta}; "
        f"kept in {report.keep_dtype}: {keep})",
        *("format", "bits/param>", "payload>", "metadata>", "kept>", "decimal>", "binary>"),
    )
    for row in report.rows:
        table.add_row(
            row.format,
            f"{row.bits_per_param:.3f}",
            fmt_decimal(row.payload_bytes),
            fmt_decimal(row.metadata_bytes) if row.metadata_bytes else "-",
            fmt_decimal(row.kept_bytes) if row.kept_bytes else "-",
            fmt_decimal(row.total_bytes),
            fmt_bytes(row.total_bytes),
        )
    roles = ", ".join(f"{role} {n:,}" for role, n in report.roles.items())
    table.caption = (
        f"parameters by role: {roles}. decimal: 1 MB = 10^6 B; binary: 1 MiB = 2^20 B."
        + (
            f" Buffers, not included: {fmt_decimal(report.buffer_bytes)}."
            if report.buffer_bytes
            else ""
        )
    )
    return table
