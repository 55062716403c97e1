"""Pictures of layer metrics: parameters and activations per layer, and the live activation
memory across the inference forward pass with its peak marked.

matplotlib is optional (``pip install 'memlens[plot]'``) and imported only here, when a plot
is asked for; figures are drawn with the Agg canvas, so no display and no global backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memlens._activations import ActivationReport
from memlens._errors import ConfigError, MissingExtraError
from memlens._layers._report import LayerReport
from memlens.units import fmt_bytes

_MiB = 2**20
_LABELLED_ROWS = 48  # above this, layer names are left off the x axis


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingExtraError("matplotlib", "plot", "--plot") from e
    return Figure


def save_layers_plot(
    report: LayerReport, path: str | Path, acts: ActivationReport | None = None
) -> Path:
    """Draw ``report`` (and ``acts``' live activation curve) into a .png or .svg file."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--plot needs a .png or .svg file name, got {path.name!r}")
    figure_cls = _figure()
    panels = 3 if acts is not None else 2
    fig = figure_cls(figsize=(12, 3.2 * panels), layout="constrained")
    axes = fig.subplots(panels, 1)
    rows = report.rows
    x = list(range(len(rows)))
    names = [r.path or "<root>" for r in rows]

    ax = axes[0]
    ax.bar(x, [r.params for r in rows], color="tab:blue")
    ax.set_ylabel("parameters")
    ax.set_title(f"{report.model}: parameters per layer ({report.totals.params:,} in all)")

    ax = axes[1]
    if report.workload.training:
        left = [i - 0.2 for i in x]
        right = [i + 0.2 for i in x]
        ax.bar(left, [r.output_bytes / _MiB for r in rows], 0.4, color="tab:orange", label="output")
        ax.bar(right, [r.saved_bytes / _MiB for r in rows], 0.4, color="tab:red", label="saved")
        ax.legend(loc="upper right")
    else:
        ax.bar(x, [r.output_bytes / _MiB for r in rows], color="tab:orange")
    ax.set_ylabel("MiB")
    ax.set_title(f"activations per layer, batch {report.workload.batch} ({report.workload.mode})")
    for ax in axes[:2]:
        ax.set_xlim(-0.5, len(rows) - 0.5)
        if len(rows) <= _LABELLED_ROWS:
            ax.set_xticks(x, names, rotation=90, fontsize=6)
        else:
            ax.set_xlabel("layer (execution order)")

    if acts is not None:
        ax = axes[2]
        events = range(len(acts.curve))
        ax.plot(events, [b / _MiB for b in acts.curve], color="tab:green", linewidth=1,
                label="activations + kernel workspaces")  # fmt: skip
        ax.plot(events, [b / _MiB for b in acts.tensor_curve], color="tab:purple",
                linewidth=1, label="activation tensors")  # fmt: skip
        peak = acts.peak_activation_bytes / _MiB
        ax.plot([acts.peak_event], [peak], "v", color="tab:red")
        ax.annotate(
            f"peak {fmt_bytes(acts.peak_activation_bytes)} at {acts.peak_module or '<root>'}",
            (acts.peak_event, peak),
            textcoords="offset points",
            xytext=(8, -4),
            fontsize=8,
        )
        ax.legend(loc="upper right")
        ax.set_xlabel("allocation / free event of the inference forward pass")
        ax.set_ylabel("live (MiB)")
        ax.set_title(f"live activation memory, inference batch {acts.workload.batch}")
    fig.savefig(path)
    return path
