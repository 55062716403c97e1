"""The attention option: which attention kernel a step runs, and what it keeps.

Eager attention (and SDPA's math path) materialises the ``heads x seq x seq`` scores; the
fused CUDA kernels keep only the output and a log-sum-exp. Sizes are small so that a score
matrix has a size no other tensor of the step has.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("transformers")

import memlens  # noqa: E402
from memlens._errors import WorkloadError  # noqa: E402
from memlens.categories import Phase  # noqa: E402
from memlens.sources.huggingface import attn_implementation  # noqa: E402

B, S, H = 2, 40, 4  # batch, tokens, heads: scores are B*H*S*S elements
TINY_BERT = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": H,
    "num_hidden_layers": 2,
    "vocab_size": 500,
    "max_position_embeddings": 64,
}
GPU = "h100-80gb"


def _config(tmp_path, **extra) -> str:
    path = tmp_path / "tiny-bert" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**TINY_BERT, **extra}))
    return str(path)


def _score_blocks(est, elem: int) -> list:
    """Forward blocks the size of one layer's scores (``B x H x S x S``)."""
    size = B * H * S * S * elem
    return [b for b in est.timeline.blocks if b.phase is Phase.FORWARD and b.nbytes == size]


def _estimate(model, **kw):
    return memlens.estimate(model, batch=B, seq_len=S, device=GPU, **kw)


def test_eager_keeps_scores_and_sdpa_does_not_on_cuda(tmp_path):
    path = _config(tmp_path)
    eager = _estimate(path, attention="eager")
    sdpa = _estimate(path, attention="sdpa")
    assert len(_score_blocks(eager, 4)) >= 2  # scores and softmax, per layer
    assert _score_blocks(sdpa, 4) == []
    assert eager.peak_bytes > sdpa.peak_bytes


def test_config_attn_implementation_is_honoured_under_auto(tmp_path):
    own = _estimate(_config(tmp_path, attn_implementation="eager"))
    assert _score_blocks(own, 4)
    overridden = _estimate(_config(tmp_path, attn_implementation="eager"), attention="sdpa")
    assert _score_blocks(overridden, 4) == []


def test_attn_implementation_table():
    assert attn_implementation({}, "auto") is None  # transformers' default
    assert attn_implementation({"attn_implementation": "eager"}) == "eager"
    assert attn_implementation({"attn_implementation": "flash_attention_2"}) == "sdpa"
    assert attn_implementation({"attn_implementation": "eager"}, "flash") == "sdpa"
    assert attn_implementation({}, "eager") == "eager"


class _Attend(nn.Module):
    """Plain ``F.scaled_dot_product_attention`` on projected heads."""

    def __init__(self, dim: int = 32, heads: int = H) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return o.transpose(1, 2).reshape(b, s, d)


def _plain(attention: str, precision: str, device: str = GPU):
    return memlens.estimate(
        _Attend(),
        input_shape=(S, 32),
        batch=B,
        device=device,
        precision=precision,
        attention=attention,
    )


def test_flash_is_refused_in_fp32_naming_the_option():
    with pytest.raises(WorkloadError, match="attention.*fp16 or bf16"):
        _plain("flash", "fp32")


def test_forced_kernels_on_cuda():
    flash = _plain("flash", "fp16")
    ops = {b.op for b in flash.timeline.blocks}
    assert "aten._scaled_dot_product_flash_attention" in ops
    eff = _plain("mem-efficient", "fp16")
    assert "aten._scaled_dot_product_efficient_attention" in {b.op for b in eff.timeline.blocks}
    eager = _plain("eager", "fp16")
    assert _score_blocks(eager, 4)  # the math path upcasts half precision to fp32
    assert _score_blocks(flash, 4) == _score_blocks(flash, 2) == []


def test_cpu_target_mem_efficient_refused_and_eager_is_math():
    with pytest.raises(WorkloadError, match="CPU target"):
        _plain("mem-efficient", "fp32", device="cpu")
    assert _score_blocks(_plain("eager", "fp32", device="cpu"), 4)
    assert _score_blocks(_plain("auto", "fp32", device="cpu"), 4) == []  # CPU's flash kernel


TINY_OPT = {
    "architectures": ["OPTForCausalLM"],
    "model_type": "opt",
    "hidden_size": 32,
    "num_attention_heads": H,
    "ffn_dim": 64,
    "num_hidden_layers": 2,
    "vocab_size": 500,
    "max_position_embeddings": 64,
    "word_embed_proj_dim": 32,
}


def test_opt_eager_fp16_softmax_has_no_fp32_copy_of_the_scores_on_cuda(tmp_path):
    """OPT's eager attention runs ``softmax(scores, dtype=float32)`` on fp16 scores: CUDA fuses
    it (no fp32 copy of the scores), the CPU trace makes the copy."""
    path = tmp_path / "tiny-opt" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(TINY_OPT))

    def fp32_copies(device: str) -> int:
        est = memlens.estimate(
            str(path), batch=B, seq_len=S, device=device, precision="fp16", attention="eager"
        )
        return sum(b.op == "aten._to_copy" for b in _score_blocks(est, 4))

    assert fp32_copies(GPU) == 0
    assert fp32_copies("cpu") == TINY_OPT["num_hidden_layers"]


def test_gpus_before_sm80_run_mem_efficient_attention():
    """Flash attention needs sm80 or newer (sdp_utils.cpp): on a V100, auto takes
    memory-efficient attention and flash is refused with the architecture named."""
    ops = {b.op for b in _plain("auto", "fp16", device="v100").timeline.blocks}
    assert "aten._scaled_dot_product_efficient_attention" in ops
    assert "aten._scaled_dot_product_flash_attention" not in ops
    with pytest.raises(WorkloadError, match="sm80 or newer.*sm70"):
        _plain("flash", "fp16", device="v100")
