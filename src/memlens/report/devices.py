"""The device catalog as a table."""

from __future__ import annotations

from rich.table import Table

from memlens.devices import Device
from memlens.report._style import titled_table
from memlens.units import fmt_bytes, fmt_decimal


def devices_table(devices: list[Device]) -> Table:
    """Name, kind, memory type, capacity (binary and decimal) and bandwidth of each device."""
    table = titled_table(
        "Devices (capacity in binary GiB; vendors quote decimal GB)",
        *("name", "kind", "memory", "capacity>", "decimal>", "bandwidth>"),
    )
    for d in devices:
        bw = f"{d.bandwidth_bytes_per_s / 1e9:,.0f} GB/s" if d.bandwidth_bytes_per_s else ""
        cap = fmt_bytes(d.capacity_bytes) + ("" if d.capacity_reported else " (nominal)")
        table.add_row(d.name, d.kind, d.memory_type, cap, fmt_decimal(d.capacity_bytes), bw)
    return table
