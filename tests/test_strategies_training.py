"""Freezing, LoRA, gradient accumulation and optimizers: estimate vs a real CPU step, and
the state each one keeps against hand-computed bytes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import memlens
from memlens.categories import Category, Phase
from memlens.report.json import to_json
from memlens.strategies.lora import LoRALinear, apply_lora, default_targets
from memlens.workload import LoraConfig


class Attention(nn.Module):
    """Named like a Llama layer so LoRA's default targets (q_proj, v_proj) apply."""

    def __init__(self, d: int = 128) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        a = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v
        x = x + self.o_proj(a)
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(32, 128)
        self.layers = nn.Sequential(Attention(), Attention())
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.embed(x)))


KW = {"batch": 4, "input_shape": (64, 32)}
N_PARAMS = sum(p.numel() for p in Net().parameters())


def _real_vs_estimate(**kwargs):
    est = memlens.estimate(Net, device="cpu", **KW, **kwargs)
    real = memlens.measure(Net, device="cpu", **KW, **kwargs)
    return est, real


@pytest.mark.parametrize(
    "kwargs",
    [
        {"freeze": "embed,layers.0"},
        {"freeze": "all-but-head"},
        {"lora": "r=8"},
        {"lora": "r=4,alpha=8,dropout=0.1,targets=q_proj,k_proj,v_proj,o_proj"},
        {"grad_accum": 3},
        {"optimizer": "lion"},
        {"optimizer": "adafactor"},
        {"optimizer": "adam-8bit"},
        {"optimizer": "sgd-momentum", "optimizer_impl": "foreach"},
        {"optimizer": "adamw", "optimizer_impl": "fused"},
    ],
)
def test_strategy_matches_cpu_allocator(kwargs):
    est, real = _real_vs_estimate(**kwargs)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)
    assert est.first_step_peak_bytes == pytest.approx(real.first_step_peak_bytes, rel=0.02)


def _setup_bytes(est, category: Category) -> int:
    return sum(
        b.nbytes for b in est.timeline.blocks if b.phase is Phase.SETUP and b.category is category
    )


def test_frozen_parameters_take_no_gradient_or_state():
    est = memlens.estimate(Net, device="cpu", freeze="all-but-head", optimizer="adam", **KW)
    head = 128 * 10 + 10
    assert est.trainable_params == head
    assert est.strategies["frozen_params"] == N_PARAMS - head
    # Adam: two fp32 moments per trainable element and a 4-byte step per tensor
    assert _setup_bytes(est, Category.OPTIMIZER_STATE) == 2 * 4 * head + 2 * 4


def test_lora_adds_adapters_and_freezes_the_base():
    est = memlens.estimate(Net, device="cpu", lora="r=8", optimizer="sgd", **KW)
    adapters = 2 * 2 * (8 * 128 + 128 * 8)  # 2 layers x (q_proj, v_proj) x (A + B)
    assert est.trainable_params == adapters == est.strategies["lora_params"]
    assert est.num_params == N_PARAMS + adapters


def test_lora_targets_default_by_family_and_refuse_when_unknown():
    assert default_targets(Net()) == ("q_proj", "v_proj")
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(memlens.ConfigError, match="targets="):
        default_targets(cnn)
    apply_lora(cnn, LoraConfig(r=2, targets=("2",)), torch.float32)
    assert isinstance(cnn[2], LoRALinear) and not cnn[0].weight.requires_grad


def test_gradient_accumulation_keeps_gradients_across_micro_batches():
    one = memlens.estimate(Net, device="cpu", optimizer="sgd", **KW)
    four = memlens.estimate(Net, device="cpu", optimizer="sgd", grad_accum=4, **KW)
    assert to_json(four)["effective_batch"] == 4 * KW["batch"]
    assert four.strategies["micro_batch"] == KW["batch"]
    # gradients of the first micro-batch are alive during the next forward: the peak can only grow
    assert four.peak_bytes >= one.peak_bytes
    assert four.step_flops == pytest.approx(4 * one.step_flops, rel=0.01)


@pytest.mark.parametrize(
    ("optimizer", "per_tensor"),
    [
        ("sgd", lambda n, shape: 0),
        ("sgd-momentum", lambda n, shape: 4 * n),
        ("lion", lambda n, shape: 4 * n),
        ("adam", lambda n, shape: 8 * n + 4),
        # bitsandbytes: two uint8 moments and two fp32 absmax per 2048-element block;
        # tensors under 4096 elements keep two fp32 moments
        ("adam-8bit", lambda n, shape: 2 * n + 8 * math.ceil(n / 2048) if n >= 4096 else 8 * n),
        # Adafactor: row and column second moments for matrices, a full one for vectors
        (
            "adafactor",
            lambda n, shape: 4 * (shape[0] + shape[1]) + 4 if len(shape) == 2 else 4 * n + 4,
        ),
    ],
)
def test_optimizer_state_bytes(optimizer, per_tensor):
    est = memlens.estimate(Net, device="cpu", optimizer=optimizer, **KW)
    expected = sum(per_tensor(p.numel(), tuple(p.shape)) for p in Net().parameters())
    if optimizer == "adam-8bit":
        expected += 2 * 256 * 4  # the two shared dynamic quantisation maps
    assert _setup_bytes(est, Category.OPTIMIZER_STATE) == expected


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"freeze": "nothing.matches"}, "freeze"),
        ({"freeze": "*"}, "freeze"),
        ({"lora": "rank=4"}, "lora"),
        ({"lora": "r=0"}, "lora.r"),
        ({"optimizer": "lion", "optimizer_impl": "fused"}, "optimizer_impl"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"grad_accum": 2, "mode": "inference"}, "grad_accum"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(memlens.WorkloadError) as info:
        memlens.estimate(Net, device="cpu", **{**KW, **kwargs})
    assert info.value.field == field
