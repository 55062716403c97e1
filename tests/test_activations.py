"""Inference activation peaks from the engine, checked against the real CPU run, and the
effect of skip connections (the peak exceeds any single layer's input + output)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memlens import activations
from memlens._activations import ActivationReport
from memlens.measurement import Measurement, measure_spec
from memlens.sources.registry import resolve
from memlens.targets import resolve_target

BATCH = 8
TOLERANCE = 0.05


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Three levels down, three up; each decoder level concatenates the encoder's output."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3 = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = block(4 * c, 8 * c)
        self.up3, self.dec3 = nn.ConvTranspose2d(8 * c, 4 * c, 2, stride=2), block(8 * c, 4 * c)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2), block(4 * c, 2 * c)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), block(2 * c, c)
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def unet_spec():  # type: ignore[no-untyped-def]
    return resolve(UNet, inputs=lambda: torch.randn(BATCH, 3, 128, 128))


@pytest.fixture(scope="module", params=["unet", "resnet50"])
def traced_and_measured(request: pytest.FixtureRequest) -> tuple[ActivationReport, Measurement]:
    spec = unet_spec() if request.param == "unet" else resolve("resnet50")
    report = activations(spec, batch=BATCH)
    return report, measure_spec(spec, report.workload, resolve_target("cpu"))


def test_peak_agrees_with_the_cpu_measurement(
    traced_and_measured: tuple[ActivationReport, Measurement],
) -> None:
    report, measured = traced_and_measured
    total_error = (report.peak_bytes - measured.peak_bytes) / measured.peak_bytes
    assert abs(total_error) < TOLERANCE, total_error
    # like with like: parameters, buffers and inputs taken off both sides
    assert report.baseline_bytes == measured.baseline_bytes
    measured_activations = measured.peak_bytes - measured.baseline_bytes
    error = (report.peak_activation_bytes - measured_activations) / measured_activations
    assert abs(error) < TOLERANCE, error


def test_skip_connections_keep_the_peak_above_any_single_layer(
    traced_and_measured: tuple[ActivationReport, Measurement],
) -> None:
    report, _ = traced_and_measured
    assert report.peak_tensor_bytes > report.max_layer_io_bytes
    assert report.peak_activation_bytes >= report.peak_tensor_bytes
    assert report.total_output_bytes > report.peak_activation_bytes  # summing overstates
    assert sum(t.nbytes for t in report.live) == report.peak_activation_bytes
    assert sum(t.nbytes for t in report.live if t.workspace) == report.peak_workspace_bytes


def test_unet_encoder_outputs_are_alive_at_the_decoder_peak() -> None:
    report = activations(unet_spec(), batch=BATCH)
    assert report.peak_module.startswith("dec1")
    live = {t.module for t in report.live}
    assert {"enc1.4", "enc2.4", "enc3.4"} <= live  # the three skip tensors
    e1 = BATCH * 16 * 128 * 128 * 4
    assert report.max_layer_io_bytes == 3 * e1  # dec1.0's input (cat: 2 x e1) + output
    assert report.skip_factor > 2


def test_resnet_identity_branch_sets_the_tensor_peak() -> None:
    report = activations("resnet50", batch=2)
    assert report.peak_tensor_module == "layer1.0.downsample.1"
    assert report.curve[report.peak_event] == report.peak_activation_bytes
    assert max(report.tensor_curve) == report.peak_tensor_bytes
