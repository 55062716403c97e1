"""The host-memory table: RAM the step needs outside the device (data pipeline, offloaded
optimizer), row by row with the formula behind each figure."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from memlens.report._style import titled_table
from memlens.strategies.data import HostMemory
from memlens.units import fmt_bytes


def host_table(host: HostMemory) -> Table:
    """One row per host-memory item, then the total."""
    table = titled_table(
        "Host memory (RAM, outside the device)", "item", "bytes>", "size>", "formula"
    )
    for row in host.rows:
        table.add_row(row.what, f"{row.bytes:,}", fmt_bytes(row.bytes), row.formula)
    table.add_section()
    total = host.total_bytes
    table.add_row(Text("total host", style="bold"), f"{total:,}", fmt_bytes(total), "")
    return table
