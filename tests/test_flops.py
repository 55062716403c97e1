"""FLOPs: the engine (CPU and CUDA targets) and ``layers`` count with one table, and agree
with hand-computed products and with each other on the zoo."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import memlens
from memlens._layers._report import layers

B, S, D, HEADS, FF = 2, 8, 32, 4, 64


def engine_flops(model, mode: str = "inference", device: str = "cpu", **kwargs) -> int:
    return memlens.estimate(model, mode=mode, device=device, optimizer="sgd", **kwargs).step_flops


def every_count(model, **kwargs) -> set[int]:
    """Inference FLOPs of the CPU target, the CUDA target and ``layers`` (2 per MAC)."""
    report = layers(model, mode="inference", **kwargs)
    return {
        engine_flops(model, device="cpu", **kwargs),
        engine_flops(model, device="cuda", **kwargs),
        report.totals.flops,
        2 * report.totals.macs,
    }


def attention_by_hand(s_q: int = S, s_k: int = S) -> int:
    """``Q K^T`` and ``P V`` over all heads: ``2 * (2*b*s_q*s_k*D)``."""
    return 2 * (2 * B * s_q * s_k * D)


def projection(rows: int, c_in: int, c_out: int) -> int:
    return 2 * rows * c_in * c_out


def test_linear() -> None:
    assert every_count(lambda: nn.Linear(D, FF), batch=B, input_shape=(D,)) == {
        projection(B, D, FF)
    }


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_multihead_attention() -> None:
    """The CPU target runs the fused fast path (one op), the CUDA target and ``layers`` in
    training the projections and attention op by op: one count, Q/K/V/out projections plus
    the two attention products."""
    expected = 4 * projection(B * S, D, D) + attention_by_hand()
    assert every_count(SelfAttention, batch=B, input_shape=(S, D)) == {expected}
    assert layers(SelfAttention, mode="train", batch=B, input_shape=(S, D)).totals.flops == expected


def test_transformer_encoder_layer_fast_path() -> None:
    def encoder() -> nn.Module:
        return nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)

    feed_forward = projection(B * S, D, FF) + projection(B * S, FF, D)
    expected = 4 * projection(B * S, D, D) + attention_by_hand() + feed_forward
    assert every_count(encoder, batch=B, input_shape=(S, D)) == {expected}


class SdpaBlock(nn.Module):
    """A QKV projection and ``scaled_dot_product_attention``, on its math path if asked."""

    def __init__(self, math: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.math = math

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.unflatten(-1, (HEADS, -1)).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        with sdpa_kernel(SDPBackend.MATH) if self.math else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v)


def test_attention_flops_do_not_depend_on_the_kernel() -> None:
    """Training: CPU flash attention, the math path (``bmm`` ops) and the CUDA target's
    memory-efficient kernel all count the forward's two products and the backward's four;
    the projection's backward computes only the weight's gradient (the input needs none)."""
    expected = 2 * projection(B * S, D, 3 * D) + 3 * attention_by_hand()
    counts = {
        engine_flops(block, mode="train", device=device, batch=B, input_shape=(S, D))
        for block in (SdpaBlock, lambda: SdpaBlock(math=True))
        for device in ("cpu", "cuda")
    }
    assert counts == {expected}


# -- the zoo -------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from accuracy import ZOO  # noqa: E402

#: Zoo rows checked here (every kind of network but the slowest CNNs), at batch 1 and short
#: sequences.
CHECKED = (
    "mlp",
    "squeezenet1_1",
    "resnet18",
    "mobilenet_v2",
    "vit_b_16",
    "bert-base-uncased",
    "gpt2",
)


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [pytest.param(model, kwargs, id=label) for label, model, _, kwargs in ZOO if label in CHECKED],
)
def test_zoo_engine_and_layers_agree(model: str, kwargs: dict) -> None:
    kwargs = {**kwargs, "batch": 1} | ({"seq_len": 16} if "seq_len" in kwargs else {})
    counts = every_count(model, **kwargs)
    assert len(counts) == 1 and 0 not in counts
