"""``memlens devices``: the device catalog."""

from __future__ import annotations

import dataclasses

import typer

from memlens.commands._options import Json, print_json, show


def register(app: typer.Typer) -> None:
    @app.command()
    def devices(as_json: Json = False) -> None:
        """List the devices memlens knows, with capacity and bandwidth."""
        from memlens.devices import list_devices
        from memlens.report.devices import devices_table

        rows = list_devices()
        if as_json:
            print_json([dataclasses.asdict(d) for d in rows])
        else:
            show(devices_table(rows))
