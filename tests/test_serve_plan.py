"""serve-plan (memlens.plan.serve): vLLM's startup arithmetic against hand computations."""

from __future__ import annotations

import json
import struct
import sys

import pytest

import memlens
from memlens._errors import ConfigError, WorkloadError
from memlens.analytic.kv_cache import kv_cache
from memlens.cuda_stack import cuda_stack
from memlens.plan.serve import _blocks, serve_plan
from memlens.sources import bundled

A100 = 85_899_345_920  # a100-80gb in the catalog (80 GiB)
H100 = 85_520_809_984  # h100-80gb, as the driver reports it


def workspace(arch: str, default: int) -> int:
    stack = cuda_stack(arch, default_workspace_bytes=default)
    extra = stack.cublaslt_workspace_bytes if stack.cublaslt_workspace != "shared" else 0
    return stack.cublas_workspace_bytes + extra


def test_llama_3_8b_on_a100_by_hand():
    p = serve_plan("llama-3-8b", gpu="a100-80gb", context="500MiB")
    requested = int(A100 * 0.9)
    weights = 8_030_261_248 * 2  # bf16, from the config's torch_dtype
    # vllm serve on an A100: max_num_batched_tokens 2048, max_num_seqs 256
    assert (p.max_num_batched_tokens, p.max_num_seqs) == (2048, 256)
    t, h, inter = 2048, 4096, 14336
    mlp = (3 * t * h + 3 * t * inter) * 2  # residual, input, output + gate_up, act
    sampler = 256 * 128_256 * (2 + 3 * 4)  # logits in bf16 and 3 fp32 copies
    assert sampler > mlp
    activation = sampler + workspace("sm80", 8_519_680)
    rope = 8192 * 128 * 2  # vLLM's cos_sin_cache: positions x head dim, bf16
    available = requested - weights - rope - activation
    block = 2 * 16 * 8 * 128 * 2 * 32  # K and V, 16 tokens, 8 heads of 128, bf16, 32 layers
    blocks = available // block
    assert p.requested_bytes == requested
    assert p.weights.total_bytes == weights
    assert p.activation_bytes == activation
    assert p.kv_available_bytes == available
    assert p.page_bytes * p.kv_layers == block
    assert p.buffer_bytes == rope
    assert p.num_blocks == blocks == 28_981
    assert p.cached_tokens == blocks * 16
    assert p.request_blocks == 8192 // 16
    assert p.concurrency == pytest.approx(blocks / 512)
    assert p.largest_context == 8192 and p.fits and p.startup_ok
    assert p.outside_budget[0].bytes == 500 * 2**20


def test_llama_3_70b_tp4_by_hand():
    p = serve_plan("llama-3-70b", gpu="h100-80gb", tp=4, context="500MiB", avg_len=1000)
    assert (p.max_num_batched_tokens, p.max_num_seqs) == (8192, 1024)  # vllm serve on H100
    h, inter, vocab, layers = 8192, 28672, 128_256, 80
    linear = h * h * 2 + 1024 * h * 2 + 3 * inter * h  # q, o, k, v, gate, up, down
    per_gpu = (2 * vocab * h + layers * linear) // 4 + (2 * layers + 1) * h  # norms replicated
    assert p.weights.total_bytes == per_gpu * 2
    assert p.page_bytes == 2 * 16 * 2 * 128 * 2  # 8 KV heads over 4 GPUs
    available = int(H100 * 0.9) - per_gpu * 2 - 8192 * 128 * 2 - p.activation_bytes
    assert p.num_blocks == available // (p.page_bytes * layers)
    assert p.concurrency == pytest.approx(p.num_blocks / 512)
    assert p.concurrency_avg == pytest.approx(p.num_blocks / 63)  # cdiv(1000, 16)
    assert p.tp == 4 and "NCCL" in " ".join(p.unknowns)
    nccl = 16 * (4 * 2**20 + 512 * 1024 + 4_915_200)  # memlens.distributed.nccl
    assert [t.bytes for t in p.outside_budget] == [500 * 2**20, nccl, 24 * 2**20]
    assert p.startup_ok


def test_fp8_kv_and_int4_weights_give_more_blocks():
    base = serve_plan("llama-3-70b", gpu="h100-80gb", tp=4)
    fp8 = serve_plan("llama-3-70b", gpu="h100-80gb", tp=4, kv_dtype="fp8")
    int4 = serve_plan("llama-3-70b", gpu="h100-80gb", tp=4, quantize="int4", kv_dtype="fp8")
    assert fp8.page_bytes * 2 == base.page_bytes
    assert fp8.num_blocks == base.kv_available_bytes // (fp8.page_bytes * 80)
    assert int4.scheme == "gptq-int4" and int4.weights.total_bytes < base.weights.total_bytes / 3
    assert int4.num_blocks > fp8.num_blocks


def test_a_checkpoint_header_gives_the_weights(tmp_path):
    entries = {
        "model.layers.0.mlp.down_proj.qweight": ("I32", [1792, 4096]),
        "model.layers.0.mlp.down_proj.qzeros": ("I32", [112, 512]),
        "model.layers.0.mlp.down_proj.scales": ("F16", [112, 4096]),
        "model.layers.0.mlp.down_proj.g_idx": ("I32", [14336]),
    }
    header, offset = {}, 0
    for key, (dtype, shape) in entries.items():
        n = (4 if dtype == "I32" else 2) * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    p = serve_plan("llama-3-8b", gpu="a100-80gb", weights=str(path))
    assert (p.scheme, p.weights.method) == ("gptq-int4", "safetensors header")
    assert p.weights.total_bytes == offset
    with pytest.raises(WorkloadError, match="header gives"):
        serve_plan("llama-3-8b", weights=str(path), quantize="int4")


def test_smallest_tp_for_a_concurrency():
    p = serve_plan("llama-3-70b", gpu="a100-80gb", max_model_len=8192, concurrency=100)
    assert p.min_tp is not None
    at = serve_plan("llama-3-70b", gpu="a100-80gb", tp=p.min_tp, max_model_len=8192)
    below = serve_plan("llama-3-70b", gpu="a100-80gb", tp=p.min_tp // 2, max_model_len=8192)
    assert at.concurrency >= 100 > below.concurrency


def test_a_model_too_large_gets_no_blocks():
    p = serve_plan("llama-3-70b", gpu="a100-80gb")  # 131 GiB of bf16 weights on one GPU
    assert p.kv_available_bytes < 0 and p.num_blocks == 0 and not p.fits


def test_hybrid_sliding_and_full_groups():
    # Gemma-2-2B: 13 sliding + 13 full layers -> 2 groups of 13 sharing the pool
    cache = kv_cache(bundled.config("gemma-2-2b"), dtype="fp16", runtime="vllm")
    layers, groups, group_size, page, per_request = _blocks(cache, 16, 2048)
    assert (layers, groups, group_size, page) == (26, 2, 13, 16 * 4 * 256 * 2 * 2)
    # full: cdiv(8192, 16); sliding: cdiv(min(4096 - 1 + 2048, 8192), 16) + 1
    assert per_request(8192) == 512 + (-(-6143 // 16) + 1)
    # Gemma-3-1B: 4 full + 22 sliding -> groups of 4: 1 full and 6 sliding (2 padding layers)
    gemma3 = kv_cache(bundled.config("gemma-3-1b"), runtime="vllm")
    assert _blocks(gemma3, 16, 2048)[:3] == (26, 7, 4)
    mistral = kv_cache(bundled.config("mistral-7b-v0.1"), runtime="vllm")
    _, groups, group_size, _, per_request = _blocks(mistral, 16, 8192)
    assert (groups, group_size) == (1, 32)
    assert per_request(32768) == -(-(4095 + 8192) // 16) + 1


GQA_12_3 = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 1536,
    "intermediate_size": 4096,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "num_key_value_heads": 3,
    "vocab_size": 1024,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"model": "no-such-model"}, ConfigError, "bundled LLM"),
        ({"model": "whisper-small"}, ConfigError, "encoder-decoder"),
        ({"tp": 3}, WorkloadError, "do not split"),
        ({"model": GQA_12_3, "tp": 4}, WorkloadError, "neither split"),
        ({"gpu_memory_utilization": 1.5}, WorkloadError, "fraction"),
        ({"kv_dtype": "int4"}, WorkloadError, "fp8"),
        ({"quantize": "int3"}, WorkloadError, "allowed"),
        ({"max_model_len": 100_000}, WorkloadError, "positions"),
        ({"block_size": 0}, WorkloadError, "positive"),
    ],
)
def test_refused(kw, error, match):
    with pytest.raises(error, match=match):
        serve_plan(**{"model": "llama-3-8b", **kw})


def test_cli_prints_every_term_and_json(capsys):
    from memlens.cli import main

    argv = sys.argv
    try:
        for extra in ([], ["--json"]):
            sys.argv = ["memlens", "serve-plan", "llama-3-8b", "--gpu", "a100-80gb", *extra]
            with pytest.raises(SystemExit) as info:
                main()
            assert info.value.code in (0, None)
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    text, _, raw = out.partition("{")
    for term in ("weights", "activation peak", "KV cache memory", "cache blocks", "28,981"):
        assert term in text
    data = json.loads("{" + raw)
    assert data["kind"] == "serve-plan" and data["num_blocks"] == 28_981
    assert memlens.serve_plan is serve_plan


def test_table_golden():
    """The rendered table at 80 and 120 columns (MEMLENS_UPDATE_GOLDEN=1 rewrites it)."""
    import io
    import os
    from pathlib import Path

    from rich.console import Console

    from memlens.report.serve import serve_table

    plan = serve_plan(
        "llama-3-70b", gpu="h100-80gb", tp=4, context="500MiB", avg_len=2000, concurrency=100
    )
    for width in (80, 120):
        console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
        console.print(serve_table(plan))
        text = console.file.getvalue()
        path = Path(__file__).parent / "golden" / f"serve-plan-{width}.txt"
        if os.environ.get("MEMLENS_UPDATE_GOLDEN") == "1":
            path.write_text(text)
        assert text == path.read_text(), f"{path.name} differs (MEMLENS_UPDATE_GOLDEN=1)"


def test_fp32_checkpoints_are_served_in_half_precision():
    # GPT-2's config names no torch_dtype: read as fp32, served in bf16 on sm80+, fp16 before
    a100 = serve_plan("gpt2", gpu="a100-80gb")
    t4 = serve_plan("gpt2", gpu="t4")
    assert (a100.weights.scheme.compute_dtype, t4.weights.scheme.compute_dtype) == ("bf16", "fp16")
    assert a100.weights.total_bytes == 124_439_808 * 2
    assert "0.10.1" in a100.unknowns[0]


def test_weights_match_a_published_vllm_log():
    """vllm-project/vllm PR #12569 (January 2025) logs ``Loading model weights took 67.7229
    GB`` (vLLM's GB is GiB_bytes) for neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w8a8:
    int8 linears with a fp32 scale per output channel, bf16 embeddings and head, and the
    rotary cache of 131,072 positions. Llama-3.1-70B is Llama-3-70B's shapes with 131,072
    positions. memlens gives 67.72279 GiB: 0.00011 GiB (114 KiB, 2e-6) under the logged
    figure, whose own rounding is 0.00005."""
    config = {**bundled.config("llama-3-70b"), "max_position_embeddings": 131_072}
    p = serve_plan(config, gpu="h100-80gb", quantize="int8", max_model_len=2048)
    assert abs((p.weights.total_bytes + p.buffer_bytes) / 2**30 - 67.7229) < 2e-4


@pytest.mark.parametrize(("tokens", "peak_torch_gib"), [(20_000, 17.06), (29_000, 17.98)])
def test_activation_peak_matches_published_vllm_profiles(tokens, peak_torch_gib):
    """vllm-project/vllm issue #10517 (RTX 3090, Llama-3.1-8B-Instruct, bf16, chunked prefill
    off so the profile forward runs ``max_model_len`` tokens): ``Loading model weights took
    14.9888 GB`` and ``peak_torch_memory`` 17.06 GiB at 20,000 tokens, 17.98 GiB at 29,000
    (two decimals: +-0.005). The closed form gives 2.0679 and 2.9948 GiB of activations
    against 2.0712 and 2.9912 logged."""
    config = {**bundled.config("llama-3-8b"), "max_position_embeddings": 131_072}
    p = serve_plan(
        config,
        gpu="rtx-3090",
        max_model_len=tokens,
        max_num_batched_tokens=tokens,
        max_num_seqs=256,
    )
    weights = (p.weights.total_bytes + p.buffer_bytes) / 2**30
    assert abs(weights - 14.9888) < 1e-4
    assert abs(p.activation_bytes / 2**30 - (peak_torch_gib - 14.9888)) < 0.006
