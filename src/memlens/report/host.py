"""The host-memory table: RAM the step needs outside the device (data pipeline, offloaded
optimizer), row by row with the formula behind each figure."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from memlens.strategies.data import HostMemory
from memlens.units import fmt_bytes


def host_table(host: HostMemory) -> Table:
    """One row per host-memory item, then the total."""
    table = Table(
        title="Host memory (RAM, outside the device)",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("item")
    table.add_column("bytes", justify="right")
    table.add_column("size", justify="right")
    table.add_column("formula")
    for row in host.rows:
        table.add_row(row.what, f"{row.bytes:,}", fmt_bytes(row.bytes), row.formula)
    table.add_section()
    total = host.total_bytes
    table.add_row(Text("total host", style="bold"), f"{total:,}", fmt_bytes(total), "")
    return table
