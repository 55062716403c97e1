"""``memlens inspect`` and the ONNX liveness peak against the engine."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

import memlens
from memlens.cli import app
from memlens.sources.checkpoint import summarize

runner = CliRunner()


def test_inspect_safetensors_json(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10, 4), "b": torch.zeros(3, dtype=torch.bfloat16)}, str(path))
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_params"] == 43 and data["weight_bytes"] == 40 * 4 + 3 * 2
    assert data["largest"]["name"] == "a"


def test_estimate_refuses_weights_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(memlens.ConfigError, match="memlens inspect"):
        memlens.estimate(str(path), device="cpu")


class _ResidualCNN(nn.Module):
    """No batch norm, so the exported graph keeps every parameter (no folding)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.a(x)))
        return self.head(x.mean(dim=(2, 3)))


def test_onnx_peak_agrees_with_engine(tmp_path):
    model = _ResidualCNN().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    onnx_summary = summarize(path, batch=8)
    # Same graph on the engine, CUDA semantics (no CPU-kernel workspaces), exact bytes.
    est = memlens.estimate(
        _ResidualCNN, batch=8, input_shape=(3, 64, 64), mode="inference", device="cuda"
    )
    exact_peak = max(est.timeline.curve())
    assert onnx_summary.n_params == est.num_params
    assert onnx_summary.peak_bytes == pytest.approx(exact_peak, rel=0.05)
