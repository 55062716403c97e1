"""Renders against stored golden outputs at 80 and 120 columns.

Each render is a pure function of a result: the results here come from small CPU models
traced under a budget (so no figure depends on this machine's RAM), or are built by hand, and
their timings are set to zero. Convolutions are left out where kernel workspaces show (they
depend on the CPU's instruction set). Regenerate after a deliberate change with
``MEMLENS_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and review the diff.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console, RenderableType
from torch import nn

import memlens
from memlens.measurement.result import Measurement
from memlens.sources.weights import TensorInfo, WeightsSummary

from conftest import small_cnn

GOLDEN = Path(__file__).parent / "golden"
WIDTHS = (80, 120)
UPDATE = os.environ.get("MEMLENS_UPDATE_GOLDEN") == "1"
TARGET = {"device": "cpu", "budget": "4MiB"}


def deep_mlp() -> nn.Module:
    """Three linear layers (16 -> 64 -> 64 -> 4) with ReLUs: 5,508 parameters."""
    return nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )


def _text(renderable: RenderableType, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _check(name: str, renderable: RenderableType) -> None:
    for width in WIDTHS:
        path = GOLDEN / f"{name}-{width}.txt"
        text = _text(renderable, width)
        if UPDATE:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"no golden {path.name}: run with MEMLENS_UPDATE_GOLDEN=1"
        assert text == path.read_text(), f"{path.name} differs (MEMLENS_UPDATE_GOLDEN=1)"


def _estimate(**fields):
    est = memlens.estimate(deep_mlp, input_shape=(16,), **TARGET, **fields)
    est.seconds = 0.0
    return est


MEASURED_CPU = Measurement(
    device="cpu",
    peak_bytes=93_112,
    reserved_peak_bytes=93_112,
    baseline_bytes=41_792,
    step_seconds=0.0,
    first_step_peak_bytes=75_000,
)


def test_estimate():
    from memlens.report.budget import render_estimate

    _check("estimate", render_estimate(_estimate(batch=32, optimizer="adam")))


def test_estimate_with_strategies_host_and_a_real_run():
    from memlens.report.budget import render_estimate

    est = _estimate(
        batch=32,
        optimizer="sgd-momentum",
        freeze="0.*",
        grad_accum=2,
        dataset_size=1000,
        sample_shape="16",
        num_workers=2,
        pin_memory=True,
    )
    _check("estimate-strategies", render_estimate(est, MEASURED_CPU))


def test_estimate_that_does_not_fit():
    from memlens.report.budget import render_estimate

    est = memlens.estimate(deep_mlp, input_shape=(16,), batch=4096, device="cpu", budget="1MiB")
    est.seconds = 0.0
    _check("estimate-no-fit", render_estimate(est))


def test_measurement():
    from memlens.report.measure import measurement_table

    cuda = Measurement(
        device="cuda",
        peak_bytes=3 * 2**30,
        reserved_peak_bytes=3 * 2**30 + 2**25,
        baseline_bytes=2**30,
        step_seconds=0.0,
        process_bytes=4 * 2**30,
        device_name="NVIDIA H100 80GB HBM3",
    )
    _check("measure-cpu", measurement_table(MEASURED_CPU))
    _check("measure-cuda", measurement_table(cuda))


def test_fit():
    from memlens.report.plan import render_fit

    result = memlens.fit(deep_mlp, input_shape=(16,), batch=8192, **TARGET)
    result.seconds = 0.0
    _check("fit", render_fit(result))


def test_sweep():
    from memlens.report.plan import render_sweep

    result = memlens.sweep(deep_mlp, input_shape=(16,), batches="1,512,4096", **TARGET)
    _check("sweep", render_sweep(result, Path("sweep.png")))


def test_layers():
    from memlens.report.layers import render_layers

    report = memlens.layers(small_cnn, batch=8, input_shape=(3, 32, 32))
    acts = memlens.activations(deep_mlp, batch=8, input_shape=(16,))
    _check("layers", render_layers(report, acts))


def test_size():
    from memlens.report.size import size_table

    _check("size", size_table(memlens.size(7 * 10**9)))


def test_devices():
    from memlens.devices import list_devices
    from memlens.report.devices import devices_table

    _check("devices", devices_table([d for d in list_devices() if d.kind != "cpu"]))


def test_models():
    from memlens.report.models import models_table

    rows = [
        {"name": "gpt2", "family": "gpt2", "source": "bundled", "params": 124_439_808},
        {"name": "resnet50", "family": "resnet", "source": "torchvision", "params": 25_557_032},
        {"name": "timm/some_net", "family": "generic", "source": "timm", "params": None},
    ]
    _check("models", models_table(rows))


def test_inspect():
    from memlens.report.inspect import render_inspect

    tensors = (
        TensorInfo("embed.weight", (50257, 768), "BF16", 50257 * 768 * 2),
        TensorInfo("h.0.attn.weight", (768, 2304), "BF16", 768 * 2304 * 2),
        TensorInfo("h.0.ln.weight", (768,), "F32", 768 * 4),
    )
    summary = WeightsSummary("safetensors", ("model.safetensors",), tensors, notes=("a note",))
    _check("inspect", render_inspect(summary, "model.safetensors"))


def test_demo_comparison():
    from memlens.report.demo import seed_comparison

    _check("demo-seed", seed_comparison(_estimate(batch=32)))
