"""``memlens measure``: run one step for real and report what the allocator held."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from memlens.commands._options import Model, print_json, progress, show, workload_options

Force = Annotated[
    bool,
    typer.Option(
        "--force", help="Run even when the estimate exceeds the memory free now (host or GPU)."
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    @workload_options("measure", target=("device",), device="cpu")
    def measure(model: Model, force: Force = False, *, api: Any, as_json: bool) -> None:
        """Run one steady-state step for real (CPU or CUDA) and print the measured peaks."""
        from memlens._api import measure as run_measure
        from memlens.report.measure import measurement_table

        with progress(f"running {model}…", delay=0.0):
            m = run_measure(model, force=force, **api)
        if as_json:
            print_json(m)
        else:
            show(measurement_table(m))
