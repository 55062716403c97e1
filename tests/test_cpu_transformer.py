"""PyTorch's fused transformer fast path on CPU (:mod:`memlens.engine.targets.cpu_transformer`):
the trace takes it where the real eval step does, and the kernels' buffers match the CPU
allocator to the byte (fp32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memlens
from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")
MHA = aten._native_multi_head_attention.default
LAYER = aten._transformer_encoder_layer_fwd.default


def _predicted(func, args: tuple) -> int:
    """The peak the engine counts for one call: the rule's buffers or the outputs."""
    out = func(*args)
    inside = list(kernel_rules(CPU)[func](OpCall(func, args, {}, out, "cpu", CPU)))
    outputs = sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))
    return max([outputs, *inside])


def _mask(kind: str, b: int, t: int) -> tuple[torch.Tensor | None, int | None]:
    if kind == "padding":  # mask_type 1: (B, T)
        mask = torch.zeros(b, t, dtype=torch.bool)
        mask[:, -1] = True
        return mask, 1
    if kind == "causal":  # mask_type 0: (T, T), float as merge_masks may pass it
        return torch.triu(torch.full((t, t), float("-inf")), 1), 0
    return None, None


SHAPES = [(4, 32, 128, 4), (3, 17, 96, 6)]


@pytest.mark.parametrize(("b", "t", "d", "h"), SHAPES)
@pytest.mark.parametrize(
    "case", ["self", "key-is-value", "distinct", "padding", "causal", "weights", "strided"]
)
def test_native_multi_head_attention_matches_the_allocator(b, t, d, h, case) -> None:
    x = torch.randn(b, t, d)
    if case == "strided":  # a seq-first input viewed batch-first: matmul folds a copy
        x = torch.randn(t, b, d).transpose(0, 1)
    key = value = x
    if case == "key-is-value":
        key = value = torch.randn(b, t, d)
    if case == "distinct":
        key, value = torch.randn(b, t, d), torch.randn(b, t, d)
    mask, mask_type = _mask(case, b, t)
    weights = case == "weights"
    params = (torch.randn(3 * d, d), torch.randn(3 * d), torch.randn(d, d), torch.randn(d))
    args = (x, key, value, d, h, *params, mask, weights, True, mask_type)
    with torch.no_grad():
        assert _predicted(MHA, args) == allocator_peak(lambda: MHA(*args))


@pytest.mark.parametrize(("b", "t", "d", "h"), SHAPES)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize(("activation", "mask"), [("relu", "none"), ("gelu", "padding")])
def test_encoder_layer_matches_the_allocator(b, t, d, h, norm_first, activation, mask) -> None:
    layer = nn.TransformerEncoderLayer(
        d, h, 3 * d, batch_first=True, norm_first=norm_first, activation=activation
    ).eval()
    attn, m = layer.self_attn, _mask(mask, b, t)
    args = (
        torch.randn(b, t, d),
        d,
        h,
        attn.in_proj_weight,
        attn.in_proj_bias,
        attn.out_proj.weight,
        attn.out_proj.bias,
        activation == "gelu",
        norm_first,
        layer.norm1.eps,
        layer.norm1.weight,
        layer.norm1.bias,
        layer.norm2.weight,
        layer.norm2.bias,
        layer.linear1.weight,
        layer.linear1.bias,
        layer.linear2.weight,
        layer.linear2.bias,
        *m,
    )
    with torch.no_grad():
        assert _predicted(LAYER, args) == allocator_peak(lambda: LAYER(*args))


class SelfAttentionBlocks(nn.Module):
    """Two encoder layers and a bare ``nn.MultiheadAttention`` self-attention: eval mode
    runs the fused kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, 128)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(128, 4, 512, batch_first=True), 2, enable_nested_tensor=False
        )
        self.attn = nn.MultiheadAttention(128, 4, batch_first=True)
        self.out = nn.Linear(128, 1000)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens))
        return self.out(h + self.attn(h, h, h, need_weights=False)[0])


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, 1000, (8, 48)),)


def test_inference_takes_the_fast_path_and_matches_a_real_step() -> None:
    kwargs = {"device": "cpu", "inputs": _tokens, "mode": "inference"}
    est = memlens.estimate(SelfAttentionBlocks, **kwargs)
    ops = {b.op for b in est.timeline.blocks}
    assert {"aten._transformer_encoder_layer_fwd", "aten._native_multi_head_attention"} <= ops
    real = memlens.measure(SelfAttentionBlocks, **kwargs)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)


def test_training_keeps_the_unfused_path() -> None:
    est = memlens.estimate(
        SelfAttentionBlocks, device="cpu", inputs=_tokens, mode="train", optimizer="sgd"
    )
    assert "aten._transformer_encoder_layer_fwd" not in {b.op for b in est.timeline.blocks}
