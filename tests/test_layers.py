"""Layer metrics from real modules: the seed's worked examples, torchvision's published
parameter counts and GMACs, saved-for-backward bytes against the engine, and the table."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import memlens
from memlens._errors import ConfigError, MissingExtraError, WorkloadError
from memlens._layers._formulas import evaluate, formula, formula_for
from memlens._layers._report import LayerReport, layers
from memlens._pipeline import trace_spec
from memlens.categories import Category, Phase
from memlens.cli import app
from memlens.report.layers import render_layers
from memlens.sources.registry import resolve
from memlens.targets import resolve_target
from memlens.units import fmt_decimal
from memlens.workload import Workload

#: torchvision's weights metadata (shared/reference/models.json): ``num_params`` and ``_ops``
#: (GMACs: one multiply-accumulate counted once); inception_v3 at 299x299.
REFERENCE = {
    "alexnet": (61_100_840, 0.714),
    "vgg16": (138_357_544, 15.47),
    "squeezenet1_0": (1_248_424, 0.819),
    "squeezenet1_1": (1_235_496, 0.349),
    "mobilenet_v2": (3_504_872, 0.301),
    "resnet18": (11_689_512, 1.814),
    "resnet50": (25_557_032, 4.089),
    "resnet152": (60_192_808, 11.514),
    "efficientnet_b0": (5_288_548, 0.386),
    "vit_b_16": (86_567_656, 17.564),
    "densenet121": (7_978_856, 2.834),
    "inception_v3": (27_161_264, 5.713),
}


def only_row(module: nn.Module, *shape: int) -> memlens.LayerRow:
    report = layers(module, input_shape=shape, mode="inference")
    assert len(report.rows) == 1
    return report.rows[0]


# -- the seed's worked examples ----------------------------------------------------------


def test_linear_1000_to_10_weights_only_is_10000() -> None:
    row = only_row(nn.Linear(1000, 10, bias=False), 1000)
    assert row.formula is not None
    assert (row.formula.symbolic, row.formula.expression) == ("C_o*C_i", "10*1000")
    assert row.formula.value == row.params == 10_000
    assert not row.mismatch
    with_bias = only_row(nn.Linear(1000, 10), 1000)
    assert with_bias.formula is not None and with_bias.formula.expression == "10*1000 + 10"
    assert with_bias.params == with_bias.formula.value == 10_010


def test_conv_3_to_64_3x3_weights_only_is_1728() -> None:
    row = only_row(nn.Conv2d(3, 64, 3, bias=False), 3, 32, 32)
    assert row.formula is not None
    assert (row.formula.symbolic, row.formula.expression) == ("C_o*C_i*k_h*k_w", "64*3*3*3")
    assert row.params == row.formula.value == 1_728


def test_standard_vs_depthwise_separable_conv() -> None:
    standard = only_row(nn.Conv2d(32, 64, 3, bias=False), 32, 16, 16)
    assert standard.params == standard.formula.value == 18_432  # type: ignore[union-attr]
    separable = nn.Sequential(
        nn.Conv2d(32, 32, 3, groups=32, bias=False),  # depthwise
        nn.Conv2d(32, 64, 1, bias=False),  # pointwise
    )
    report = layers(separable, input_shape=(32, 16, 16), mode="inference")
    depthwise, pointwise = report.rows
    assert depthwise.formula is not None and depthwise.formula.expression == "32*32*3*3/32"
    assert depthwise.formula.symbolic == "C_o*C_i*k_h*k_w/g"
    assert (depthwise.params, pointwise.params) == (288, 2_048)
    assert report.totals.params == 2_336
    assert round(100 * (1 - 2_336 / standard.params)) == 87


def test_grouped_conv_formula() -> None:
    row = only_row(nn.Conv2d(32, 64, 3, groups=4), 32, 8, 8)
    assert row.formula is not None
    assert row.formula.symbolic == "C_o*C_i*k_h*k_w/g + C_o"
    assert row.formula.expression == "64*32*3*3/4 + 64"
    assert row.params == row.formula.value == 64 * 32 * 3 * 3 // 4 + 64


def test_resnet50_activations_batch_32_from_the_real_layers() -> None:
    rows = {r.path: r for r in layers("resnet50", batch=32, mode="inference").rows}
    assert rows["conv1"].output_shapes == [(32, 64, 112, 112)]
    assert rows["conv1"].output_bytes == 32 * 64 * 112 * 112 * 4 == 102_760_448
    assert fmt_decimal(rows["conv1"].output_bytes, precision=1) == "102.8 MB"
    assert rows["maxpool"].output_bytes == 32 * 64 * 56 * 56 * 4 == 25_690_112
    assert fmt_decimal(rows["maxpool"].output_bytes, precision=1) == "25.7 MB"


# -- formulas of every layer type equal the real counts ----------------------------------


@pytest.mark.parametrize(
    ("module", "symbolic"),
    [
        (nn.Conv1d(8, 16, 5), "C_o*C_i*k + C_o"),
        (nn.Conv3d(4, 8, (3, 3, 3), bias=False), "C_o*C_i*k_d*k_h*k_w"),
        (nn.ConvTranspose2d(16, 8, 2, stride=2, groups=2), "C_o*C_i*k_h*k_w/g + C_o"),
        (nn.Embedding(50257, 768), "V*d"),
        (nn.EmbeddingBag(1000, 64), "V*d"),
        (nn.BatchNorm2d(64), "2*C"),
        (nn.LayerNorm(768), "2*C"),
        (nn.LayerNorm(768, bias=False), "C"),
        (nn.GroupNorm(8, 64), "2*C"),
        (nn.RMSNorm(4096), "C"),
        (nn.Bilinear(10, 20, 30), "C_o*C_i1*C_i2 + C_o"),
        (nn.PReLU(16), "C"),
        (nn.MultiheadAttention(512, 8), "4*(d*d + d)"),
        (nn.MultiheadAttention(512, 8, bias=False), "4*d*d"),
        (nn.MultiheadAttention(512, 8, kdim=256, vdim=128, add_bias_kv=True), None),
        (nn.LSTM(10, 20), "4*(h*(i+h)+2h)"),
        (nn.LSTM(10, 20, num_layers=2, bidirectional=True), None),
        (nn.LSTM(10, 20, num_layers=2, bidirectional=True, proj_size=5), None),
        (nn.GRU(10, 20), "3*(h*(i+h)+2h)"),
        (nn.GRU(10, 20, bias=False), "3*(h*(i+h))"),
        (nn.RNN(10, 20, num_layers=3), None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_formula_values_equal_real_counts(module: nn.Module, symbolic: str | None) -> None:
    f = formula_for(module)
    assert f is not None and f.kind == "textbook"
    assert f.value == evaluate(f.expression) == sum(p.numel() for p in module.parameters())
    if symbolic is not None:
        assert f.symbolic == symbolic


def test_lstm_formula_is_the_gate_formula_per_layer() -> None:
    f = formula_for(nn.LSTM(10, 20, num_layers=2))
    assert f is not None
    assert f.expression == "4*(20*(10+20)+2*20) + 4*(20*(20+20)+2*20)"
    assert f.symbolic == "per layer and direction, 4*(h*(i+h)+2h)"


def test_unknown_layers_get_an_exact_shapes_formula() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3, 4))

    f = formula_for(Scale())
    assert f is not None and (f.kind, f.expression, f.value) == ("shapes", "3*4", 12)


def test_a_wrong_formula_is_flagged_not_hidden() -> None:
    wrong = {nn.Linear: lambda m: formula("C_o*C_i", f"{m.out_features}*{m.in_features}")}
    report = layers(nn.Linear(1000, 10), input_shape=(1000,), extra_formulas=wrong)
    (row,) = report.rows
    assert row.mismatch and row.params == 10_010 and row.formula.value == 10_000  # type: ignore[union-attr]
    assert any("10*1000 = 10,000 but the layer has 10,010" in n for n in report.notes)
    text = _render(report, 100)
    assert "10,010!" in text
    assert not layers(nn.Linear(1000, 10), input_shape=(1000,)).rows[0].mismatch  # not global


def test_evaluate_refuses_anything_but_arithmetic() -> None:
    assert evaluate("64*32*3*3/4 + 64") == 4672
    with pytest.raises(ValueError):
        evaluate("__import__('os')")
    with pytest.raises(ValueError):
        evaluate("3/2")


# -- tied and frozen parameters, containers, depth, sort, top ------------------------------


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 100, bias=False)
        self.head.weight = self.embed.weight
        self.scale = nn.Parameter(torch.ones(16))  # the container's own parameter

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(tokens)) * self.scale)


def test_tied_parameters_are_counted_once_and_flagged() -> None:
    model = TiedLM()
    report = layers(model, inputs=lambda: torch.randint(0, 100, (2, 8)), mode="inference")
    rows = {r.path: r for r in report.rows}
    assert rows["head"].params == 0 and rows["head"].tied_params == 1_600
    assert rows["head"].tied_to == ["embed"] and not rows["head"].mismatch
    assert rows[""].kind == "own" and rows[""].params == 16  # the container's own `scale`
    assert report.totals.params == report.num_params == sum(p.numel() for p in model.parameters())
    assert report.totals.tied_params == 1_600
    assert any("shared with embed" in n for n in report.notes)


def test_frozen_parameters_are_split_out() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    model[0].requires_grad_(False)
    report = layers(model, input_shape=(8,))
    assert (report.totals.trainable, report.totals.frozen) == (18, 72)
    assert "frozen" in _render(report, 120)


def test_depth_sort_and_top_keep_whole_model_totals() -> None:
    full = layers("resnet18")
    by_block = layers("resnet18", depth=1)
    assert [r.path for r in by_block.rows] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
    ]  # fmt: skip
    assert sum(r.params for r in by_block.rows) == full.totals.params == 11_689_512
    assert sum(r.macs for r in by_block.rows) == full.totals.macs
    assert sum(r.saved_bytes for r in by_block.rows) == full.totals.saved_bytes
    assert by_block.rows[4].kind == "group" and by_block.rows[4].type == "Sequential"
    top = layers("resnet18", sort="macs", top=5)
    assert len(top.rows) == 5 and top.totals == full.totals
    assert [r.macs for r in top.rows] == sorted((r.macs for r in full.rows), reverse=True)[:5]
    with pytest.raises(WorkloadError, match="sort"):
        layers("resnet18", sort="size")


# -- published figures ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameters_and_macs_match_torchvision(name: str) -> None:
    shape = (3, 299, 299) if name == "inception_v3" else None
    report = layers(name, mode="inference", input_shape=shape)
    params, ref_gmacs = REFERENCE[name]
    assert report.totals.params == report.num_params == params
    assert not report.mismatches  # every formula equals its layer's real count
    gmacs = report.totals.macs / 1e9
    assert abs(gmacs - ref_gmacs) / ref_gmacs < 0.02, (gmacs, ref_gmacs)
    assert report.totals.flops == 2 * report.totals.macs


def test_vit_attention_macs_are_counted_in_both_modes() -> None:
    """nn.MultiheadAttention's inference fast path is one fused op PyTorch's FLOP registry has
    no formula for; without memlens's ViT-B/16 loses its attention: 11.27, not 17.56 GMACs."""
    inference = layers("vit_b_16", mode="inference").totals.macs
    train = layers("vit_b_16", mode="train").totals.macs
    assert inference == train
    assert abs(inference / 1e9 - 17.564) < 0.01


@pytest.fixture(scope="module")
def resnet50() -> LayerReport:
    return layers("resnet50")


def test_saved_bytes_add_up_to_the_engine_activations(resnet50: LayerReport) -> None:
    """Saved tensors attributed per layer sum to the engine's training activations: the
    storages alive when backward starts, less the model's output (alive, but not saved)."""
    work = Workload(mode="train", batch=1)
    timeline = trace_spec(resolve("resnet50"), work, resolve_target("cpu")).timeline
    before_backward = timeline.phase_starts[Phase.BACKWARD] - 1
    engine = sum(
        b.nbytes
        for b in timeline.live_at(before_backward)
        if b.category is Category.ACTIVATIONS and b.phase is Phase.FORWARD
    )
    logits = 1000 * 4
    assert resnet50.totals.saved_bytes + logits == engine
    assert resnet50.saved_outside_bytes == 0


# -- the table -------------------------------------------------------------------------------


def _render(report: LayerReport, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render_layers(report))
    return out.getvalue()


@pytest.mark.parametrize("width", [100, 80, 60])
def test_resnet50_table_fits_the_terminal_without_wrapping(
    resnet50: LayerReport, width: int
) -> None:
    report = resnet50
    lines = _render(report, width).splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    total = next(i for i, line in enumerate(lines) if line.startswith("total "))
    body = lines[header + 1 : total]
    assert len(body) == len(report.rows) == 126  # one line per row: nothing wrapped
    assert [line.split()[0] for line in body] == [r.path for r in report.rows]
    assert lines[total].split()[1] == "25,557,032"
    if width == 100:
        assert {"params", "MACs", "out", "saved", "formula"} <= set(lines[header].split())


def test_cli_layers_json_and_plots(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["layers", "resnet18", "--json", "--top", "3", "--sort", "params"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["rows"]) == 3 and data["totals"]["params"] == 11_689_512
    assert data["rows"][0]["formula"]["expression"] == "512*512*3*3"
    assert data["totals"]["flops"] == 2 * data["totals"]["macs"]
    png = tmp_path / "layers.png"
    result = runner.invoke(app, ["layers", "resnet18", "--inference", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_plot_with_the_activation_curve(tmp_path: Path) -> None:
    from memlens.report.plots import save_layers_plot

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    report = layers(model, input_shape=(3, 16, 16))
    acts = memlens.activations(model, input_shape=(3, 16, 16))
    path = save_layers_plot(report, tmp_path / "layers.svg", acts)
    assert b"<svg" in path.read_bytes()[:500]


def test_plot_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memlens.report.plots import save_layers_plot

    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    report = layers(nn.Linear(4, 2), input_shape=(4,))
    with pytest.raises(MissingExtraError, match=r"pip install 'memlens\[plot\]'"):
        save_layers_plot(report, tmp_path / "x.png")
    with pytest.raises(ConfigError):
        save_layers_plot(report, tmp_path / "x.jpg")
