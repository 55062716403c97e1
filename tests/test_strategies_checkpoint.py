"""Activation checkpointing: which blocks, the memory a real CPU step shows, the recompute
cost, ``auto`` against a budget, and patches undone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memlens
from memlens.report.json import to_json
from memlens.strategies.checkpointing import checkpointed, find_blocks, segments

D, B = 128, 256  # width and batch: activations dominate the step


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class Tower(nn.Module):
    """Eight residual MLP blocks in a ModuleList, called in a loop as transformers do."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(64, D)
        self.layers = nn.ModuleList(Block() for _ in range(8))
        self.head = nn.Linear(D, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


KW = {"batch": B, "input_shape": (64,), "optimizer": "sgd"}


def test_blocks_are_the_repeated_children():
    assert find_blocks(Tower()) == [f"layers.{i}" for i in range(8)]
    import torchvision

    with torch.device("meta"):
        blocks = find_blocks(torchvision.models.resnet18())
    assert blocks == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]


def test_policies_pick_blocks():
    model = Tower()
    assert segments(model, "every-k:3") == [["layers.0"], ["layers.3"], ["layers.6"]]
    sqrt = segments(model, "sqrt")  # ceil(sqrt(8)) = 3 consecutive blocks per segment
    assert [len(s) for s in sqrt] == [3, 3, 2] and sqrt[0] == ["layers.0", "layers.1", "layers.2"]
    assert segments(model, "modules:layers.1,head") == [["layers.1"], ["head"]]


@pytest.mark.parametrize("policy", ["blocks", "sqrt", "modules:layers.5"])
def test_checkpointing_matches_cpu_allocator(policy):
    est = memlens.estimate(Tower, device="cpu", checkpoint=policy, **KW)
    real = memlens.measure(Tower, device="cpu", checkpoint=policy, **KW)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)


def test_checkpointing_trades_memory_for_recompute():
    plain = memlens.estimate(Tower, device="cpu", **KW)
    blocks = memlens.estimate(Tower, device="cpu", checkpoint="blocks", **KW)
    half = memlens.estimate(Tower, device="cpu", checkpoint="every-k:2", **KW)
    assert blocks.peak_bytes < half.peak_bytes < plain.peak_bytes
    # Recomputation stops once the last tensor saved for backward is back: autograd saves an
    # op's inputs before running it, so fc2's matmul is never re-run, only fc1's (2 B D 4D).
    per_block = 2 * B * D * 4 * D
    assert plain.recompute_flops == 0
    assert blocks.recompute_flops == 8 * per_block
    assert half.recompute_flops == 4 * per_block
    assert blocks.step_flops == plain.step_flops + blocks.recompute_flops
    assert blocks.recompute_share == pytest.approx(8 * per_block / plain.step_flops)
    assert to_json(blocks)["compute"]["recompute_flops"] == 8 * per_block


def test_auto_checkpoints_the_fewest_blocks_that_fit():
    plain = memlens.estimate(Tower, device="cpu", **KW)
    blocks = memlens.estimate(Tower, device="cpu", checkpoint="blocks", **KW)
    budget = (plain.peak_bytes + blocks.peak_bytes) // 2
    auto = memlens.estimate(Tower, device="cpu", budget=budget, checkpoint="auto", **KW)
    assert auto.fits
    chosen = auto.workload.checkpoint.removeprefix("modules:").split(",")
    assert 0 < len(chosen) < 8
    fewer = ",".join(chosen[:-1]) or None
    if fewer:
        less = memlens.estimate(
            Tower, device="cpu", budget=budget, checkpoint=f"modules:{fewer}", **KW
        )
        assert not less.fits
    # the chosen workload is measurable as it is
    real = memlens.measure(Tower, device="cpu", checkpoint=auto.workload.checkpoint, **KW)
    assert auto.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)


def test_patches_are_undone():
    model = Tower()
    with checkpointed(model, segments(model, "sqrt")):
        assert "forward" in vars(model.layers[0])
    assert all("forward" not in vars(m) for m in model.modules())


def test_checkpointed_transformer_drops_its_kv_cache():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )

    def inputs():
        ids = torch.randint(0, 256, (2, 64))
        return {"input_ids": ids, "labels": ids}  # use_cache is on by default

    def build():
        return transformers.LlamaForCausalLM(config)

    kw = {"inputs": inputs, "device": "cpu", "optimizer": "sgd"}
    est = memlens.estimate(build, checkpoint="blocks", **kw)
    assert est.strategies["checkpointed"] == [["model.layers.0"], ["model.layers.1"]]
    real = memlens.measure(build, checkpoint="blocks", **kw)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)
    # a CUDA target recomputes with CUDA's fused attention, as its forward did
    kw["device"] = "cuda"
    plain = memlens.estimate(build, precision="bf16-amp", **kw)
    blocks = memlens.estimate(build, precision="bf16-amp", checkpoint="blocks", **kw)
    assert blocks.recompute_flops > 0 and blocks.peak_bytes < plain.peak_bytes


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"checkpoint": "blocks", "mode": "inference"}, "training only"),
        ({"checkpoint": "every-k:0"}, "positive integer"),
        ({"checkpoint": "modules:layers.99"}, "not a module"),
        ({"checkpoint": "auto"}, "device capacity"),
        ({"checkpoint": "everything"}, "allowed"),
    ],
)
def test_bad_policies_name_the_field(kwargs, needle):
    with pytest.raises(memlens.WorkloadError) as info:
        memlens.estimate(Tower, device="cuda", batch=2, input_shape=(64,), **kwargs)
    assert info.value.field == "checkpoint" and needle in str(info.value)
