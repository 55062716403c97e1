"""``memlens demo``: the seed's budget example, traced from the real ResNet-50."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from memlens.units import fmt_bytes

#: The seed's "Practical Memory Budget Example" (ResNet-50 training, batch 32, Adam, 16 GB
#: V100), in its own round MB figures (see shared/reference/README.md).
SEED_MB = {
    "parameters": 98,
    "optimizer_state": 196,
    "gradients": 98,
    "activations": 5000,
    "framework_overhead": 1000,
}


def register(app: typer.Typer) -> None:
    @app.command()
    def demo() -> None:
        """ResNet-50, batch 32, Adam, on a V100-16GB: the budget table and the seed's figures."""
        from memlens._estimate import estimate
        from memlens.report.budget import render_estimate

        console = Console()
        est = estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
        console.print(render_estimate(est))
        console.print()
        console.print(seed_comparison(est))


def seed_comparison(est: object) -> Table:
    """The seed's round figures next to the traced ones (at the peak, and the step maximum)."""
    from memlens._results import Estimate

    assert isinstance(est, Estimate)
    at_peak = dict((c.value, n) for c, n in est.budget())
    maxima = {c.value: n for c, n in est.timeline.category_peaks(est.allocator.sizes).items()}
    table = Table(
        title="Seed's round figures (MB) vs traced (at the peak; largest during the step)",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for col in ("category", "seed", "traced at peak", "largest in step", "seed off by"):
        table.add_column(col, justify="left" if col == "category" else "right")
    slack = at_peak.get("allocator_slack", 0)
    for cat, mb in SEED_MB.items():
        seed = mb * 2**20
        peak = at_peak.get(cat, 0)
        largest = max(maxima.get(cat, 0), peak)
        if cat == "framework_overhead":  # the seed's overhead covers allocator slack too
            peak, largest = peak + slack, largest + slack
        off = f"{100 * (seed - largest) / largest:+.0f}%" if largest else "n/a"
        table.add_row(cat, f"{mb:,} MB", fmt_bytes(peak), fmt_bytes(largest), off)
    table.caption = (
        "seed MB read as MiB (its 98 MB of parameters is 25.6M x 4 B = 97.5 MiB). Gradients at the"
        " peak are those already produced when backward peaks; overhead = CUDA context + cuBLAS"
        " workspace + allocator slack."
    )
    return table
