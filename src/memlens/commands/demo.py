"""``memlens demo``: the seed's budget example, traced from the real ResNet-50."""

from __future__ import annotations

import typer

from memlens.commands._options import progress, show


def register(app: typer.Typer) -> None:
    @app.command()
    def demo() -> None:
        """ResNet-50, batch 32, Adam, on a V100-16GB: the budget table and the seed's figures."""
        from memlens._estimate import estimate
        from memlens.report.demo import render_demo

        with progress("tracing resnet50…"):
            est = estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
        show(render_demo(est))
