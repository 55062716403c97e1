"""Precision policies: pure half precision and autocast (AMP), estimate vs a real CPU step,
and fp16 AMP's fp32 masters and loss-scaler state against hand-computed bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memlens
from memlens.categories import Category, Phase


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


MLP = {"batch": 128, "input_shape": (512,)}
CNN = {"batch": 16, "input_shape": (3, 32, 32)}


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [
        (_mlp, {**MLP, "precision": "bf16", "optimizer": "adam"}),
        (_mlp, {**MLP, "precision": "bf16-amp", "optimizer": "adam"}),
        (_mlp, {**MLP, "precision": "fp16-amp", "optimizer": "sgd"}),
        (
            _mlp,
            {"batch": 1024, "input_shape": (512,), "precision": "bf16-amp", "mode": "inference"},
        ),
    ],
)
def test_precision_matches_cpu_allocator(model, kwargs):
    est = memlens.estimate(model, device="cpu", **kwargs)
    real = memlens.measure(model, device="cpu", **kwargs)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)


def test_cpu_half_convolution_buffers_modelled_or_declared():
    est = memlens.estimate(_cnn, device="cpu", precision="bf16-amp", optimizer="sgd", **CNN)
    real = memlens.measure(_cnn, device="cpu", precision="bf16-amp", optimizer="sgd", **CNN)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # oneDNN's half-precision convolution backward keeps fp32 weight-gradient accumulators
        # and per-thread buffers in a scratchpad no dispatch mode sees: the estimate says so.
        assert any("scratchpad" in u for u in est.unknowns)
        assert 0.85 * real.peak_bytes < est.peak_bytes <= real.peak_bytes
    else:  # no native bf16 (AVX2): PyTorch's im2col convolution, whose buffers are modelled
        assert not any("scratchpad" in u for u in est.unknowns)
        assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)


def test_amp_keeps_fp32_masters_and_half_activations():
    n = sum(p.numel() for p in _mlp().parameters())
    est = memlens.estimate(_mlp, device="cpu", optimizer="sgd", precision="fp16-amp", **MLP)
    params = [b for b in est.timeline.blocks if b.category is Category.PARAMETERS]
    assert sum(b.nbytes for b in params) == 4 * n  # fp32 master weights
    grads = est.breakdown.get("gradients", 0)
    assert grads % 4 == 0 and grads <= 4 * n
    # GradScaler: a float32 scale and an int32 growth tracker, kept across steps
    assert est.breakdown["optimizer_state"] == 4 + 4
    # the 128 x 1024 outputs of the first layers are kept for backward in fp16, not fp32
    saved = {b.nbytes for b in est.timeline.blocks if b.category is Category.ACTIVATIONS}
    assert 128 * 1024 * 2 in saved and 128 * 1024 * 4 not in saved


def test_pure_half_halves_weights_and_state():
    full = memlens.estimate(_mlp, device="cpu", optimizer="adam", **MLP)
    half = memlens.estimate(_mlp, device="cpu", optimizer="adam", precision="bf16", **MLP)

    def setup(est, cat):
        return sum(
            b.nbytes for b in est.timeline.blocks if b.phase is Phase.SETUP and b.category is cat
        )

    assert 2 * setup(half, Category.PARAMETERS) == setup(full, Category.PARAMETERS)
    # Adam's two moments follow the parameters' dtype; the step counters stay fp32
    assert setup(half, Category.OPTIMIZER_STATE) < 0.51 * setup(full, Category.OPTIMIZER_STATE)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.norm = nn.Linear(64, 3 * 64), nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # eager attention
        return self.norm(scores @ v)


def test_cuda_target_follows_cuda_autocast_lists():
    kw = {"batch": 4, "input_shape": (128, 64), "precision": "bf16-amp", "optimizer": "sgd"}
    scores = 4 * 128 * 128  # elements of the softmax output, kept for backward

    def kept(est):
        return {
            b.nbytes
            for b in est.timeline.blocks
            if b.op == "aten._softmax" and b.phase is Phase.FORWARD
        }

    cpu = memlens.estimate(_Attention, device="cpu", **kw)
    cuda = memlens.estimate(_Attention, device="cuda", **kw)
    assert kept(cpu) == {2 * scores}  # CPU autocast leaves softmax in bf16
    assert kept(cuda) == {4 * scores}  # CUDA autocast runs it in fp32
    assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CPU's own lists are back
        assert torch.softmax(torch.ones(2, dtype=torch.bfloat16), 0).dtype == torch.bfloat16


def test_autocast_region_is_left_after_the_step():
    memlens.estimate(_mlp, device="cpu", precision="bf16-amp", **MLP)
    assert not torch.is_autocast_enabled("cpu")
