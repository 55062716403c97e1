"""The seed's budget example (ResNet-50 training, batch 32, Adam, 16 GB V100) next to the
traced figures."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memlens._results import Estimate
from memlens.report._style import titled_table
from memlens.report.budget import render_estimate
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


def seed_comparison(est: Estimate) -> Table:
    """The seed's round figures next to the traced ones (at the peak, and the step maximum)."""
    at_peak = dict((c.value, n) for c, n in est.budget())
    maxima = {c.value: n for c, n in est.timeline.category_peaks(est.allocator.sizes).items()}
    table = titled_table(
        "Seed's round figures (MB) vs traced (at the peak; largest during the step)",
        *("category", "seed>", "traced at peak>", "largest in step>", "seed off by>"),
    )
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


def render_demo(est: Estimate) -> RenderableType:
    """The estimate's budget table, then the seed comparison."""
    return Group(render_estimate(est), Text(""), seed_comparison(est))
