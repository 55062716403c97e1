"""``memlens devices``: the device catalog."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from memlens.commands import options as o
from memlens.units import fmt_bytes, fmt_decimal


def register(app: typer.Typer) -> None:
    @app.command()
    def devices(as_json: o.Json = False) -> None:
        """List the devices memlens knows, with capacity and bandwidth."""
        from memlens.devices import list_devices

        rows = list_devices()
        if as_json:
            typer.echo(
                json.dumps(
                    [
                        {
                            "name": d.name,
                            "aliases": list(d.aliases),
                            "vendor": d.vendor,
                            "kind": d.kind,
                            "memory_type": d.memory_type,
                            "capacity_bytes": d.capacity_bytes,
                            "capacity_reported": d.capacity_reported,
                            "bandwidth_bytes_per_s": d.bandwidth_bytes_per_s,
                            "context_bytes": d.context_bytes,
                            "workspace_bytes": d.workspace_bytes,
                        }
                        for d in rows
                    ],
                    indent=2,
                )
            )
            return
        table = Table(
            title="Devices (capacity in binary GiB; vendors quote decimal GB)",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        for col in ("name", "kind", "memory", "capacity", "decimal", "bandwidth"):
            table.add_column(
                col, justify="right" if col in ("capacity", "decimal", "bandwidth") else "left"
            )
        for d in rows:
            bw = f"{d.bandwidth_bytes_per_s / 1e9:,.0f} GB/s" if d.bandwidth_bytes_per_s else ""
            cap = fmt_bytes(d.capacity_bytes) + ("" if d.capacity_reported else " (nominal)")
            table.add_row(d.name, d.kind, d.memory_type, cap, fmt_decimal(d.capacity_bytes), bw)
        Console().print(table)
