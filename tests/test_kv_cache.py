"""The KV cache in closed form (memlens.analytic.kv_cache), against hand computations."""

from __future__ import annotations

import pytest

from memlens._errors import ConfigError, WorkloadError
from memlens.analytic.kv_cache import kv_cache
from memlens.sources import bundled


def cache(name: str, **kw):
    return kv_cache(bundled.config(name), **kw)


def test_gqa_llama_3_8b():
    # 32 layers x 8 KV heads x 128 x (K, V) x 2 B (bf16 from torch_dtype)
    k = cache("llama-3-8b")
    assert k.kv_dtype == "bf16"
    assert k.bytes_per_token() == 32 * 8 * 128 * 2 * 2 == 131_072
    assert k.sequence_bytes(8192, batch=4) == 4 * 8192 * 131_072


def test_mha_gpt2_fp32_assumed_and_said():
    k = cache("gpt2")
    assert k.bytes_per_token() == 12 * 768 * 2 * 4
    assert any("fp32 assumed" in n for n in k.notes)


def test_mistral_sliding_window_keeps_window_minus_one():
    k = cache("mistral-7b-v0.1")
    assert {la.kind for la in k.layers} == {"sliding"}
    per_token = 32 * 8 * 128 * 2 * 2
    assert k.sequence_bytes(1000) == 1000 * per_token
    assert k.sequence_bytes(8192) == 4095 * per_token  # DynamicSlidingWindowLayer
    assert k.sequence_bytes(8192, static=True) == 4096 * per_token  # StaticSlidingWindowLayer


def test_gemma2_alternates_sliding_and_full():
    k = cache("gemma-2-2b")  # fp32 config, 26 layers, 4 KV heads of 256
    kinds = [la.kind for la in k.layers]
    assert kinds[:4] == ["sliding", "full", "sliding", "full"] and kinds.count("full") == 13
    layer = 4 * 256 * 2 * 4
    assert k.sequence_bytes(8192) == 13 * 8192 * layer + 13 * 4095 * layer


def test_gemma3_pattern_of_six_mqa():
    k = cache("gemma-3-1b")  # 26 layers, 1 KV head of 256, window 512, bf16
    full = [la.index for la in k.layers if la.kind == "full"]
    assert full == [5, 11, 17, 23]
    layer = 1 * 256 * 2 * 2
    assert k.sequence_bytes(8192) == 4 * 8192 * layer + 22 * 511 * layer == 45_066_240


def test_mla_deepseek_v2_lite_both_runtimes():
    hf = cache("deepseek-v2-lite")
    # transformers caches decompressed keys (16 heads x (128 + 64)) and values (16 x 128)
    assert hf.bytes_per_token() == 27 * 16 * (192 + 128) * 2 == 276_480
    vllm = cache("deepseek-v2-lite", runtime="vllm", tp=8)
    # vLLM caches the latent (512) and the rope key (64), replicated on every TP rank
    assert vllm.bytes_per_token() == 27 * (512 + 64) * 2 == 31_104


def test_cross_attention_whisper_and_t5():
    k = cache("whisper-small")  # fp32, 12 decoder layers x 12 heads x 64
    per_token = 12 * 12 * 64 * 2 * 4
    assert k.bytes_per_token() == per_token
    assert k.sequence_bytes(448) == 448 * per_token + 1500 * per_token
    t5 = cache("t5-small", encoder_len=512)  # 6 decoder layers x 8 heads x d_kv 64
    assert t5.sequence_bytes(10) == (10 + 512) * 6 * 8 * 64 * 2 * 4
    with pytest.raises(WorkloadError, match="encoder's output length"):
        cache("t5-small")


def test_vllm_tp_splits_kv_heads_and_replicates_past_them():
    assert cache("llama-3-70b", runtime="vllm", tp=4).bytes_per_token() == 80 * 2 * 128 * 2 * 2
    assert cache("llama-3-70b", runtime="vllm", tp=16).bytes_per_token() == 80 * 1 * 128 * 2 * 2


def test_vllm_fp8_one_byte_and_scales():
    k = cache("llama-3-8b", runtime="vllm", kv_dtype="fp8")
    assert k.bytes_per_token() == 32 * 8 * 128 * 2
    assert k.sequence_bytes(100) == 100 * 65_536 + 32 * 2 * 4


def test_quantized_cache_groups_and_residual():
    # int4 (quanto): 1024 elements of K per token and layer -> 512 B + 16 groups x (scale,
    # zero point) x 2 B (bf16)
    k = cache("llama-3-8b", kv_dtype="int4")
    assert k.bytes_per_token() == 32 * 2 * (512 + 16 * 2 * 2) == 36_864
    # int8 (HQQ): 1024 B + the same metadata
    assert cache("llama-3-8b", kv_dtype="int8").bytes_per_token() == 32 * 2 * (1024 + 64)
    # 200 decoded tokens after a 100-token prompt: 200 % 128 = 72 in the bf16 residual
    assert k.sequence_bytes(300, prompt_len=100) == 228 * 36_864 + 72 * 131_072
    # no window in QuantizedLayer
    assert cache("mistral-7b-v0.1", kv_dtype="int4").sequence_bytes(8192) == 8192 * 36_864


@pytest.mark.parametrize(
    ("name", "kw", "error", "match"),
    [
        ("bert-base-uncased", {}, ConfigError, "no KV cache"),
        ("llama-3-8b", {"runtime": "vllm", "kv_dtype": "int4"}, WorkloadError, "fp8"),
        ("llama-3-8b", {"kv_dtype": "fp8"}, WorkloadError, "no fp8"),
        ("llama-3-8b", {"kv_dtype": "int3"}, WorkloadError, "allowed"),
        ("llama-3-8b", {"tp": 2}, WorkloadError, "vllm"),
        ("llama-3-8b", {"encoder_len": 5}, WorkloadError, "encoder-decoder"),
    ],
)
def test_refused(name, kw, error, match):
    with pytest.raises(error, match=match):
        cache(name, **kw)


_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "torch_dtype": "float32",
}
_REAL = {
    "mistral-window": {**_TINY, "model_type": "mistral", "sliding_window": 8},
    "gemma3-pattern": {
        **_TINY,
        "model_type": "gemma3_text",
        "head_dim": 16,
        "sliding_window": 8,
        "num_hidden_layers": 7,
    },
    "qwen2-window-layers": {
        **_TINY,
        "model_type": "qwen2",
        "use_sliding_window": True,
        "sliding_window": 8,
        "max_window_layers": 2,
    },
    "qwen2-moe-every-layer-slides": {
        **_TINY,
        "model_type": "qwen2_moe",
        "use_sliding_window": True,
        "sliding_window": 8,
        "max_window_layers": 2,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
    },
    "deepseek-v2-mla": {
        **_TINY,
        "model_type": "deepseek_v2",
        "kv_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 16,
        "v_head_dim": 16,
        "q_lora_rank": None,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "n_shared_experts": 1,
    },
}


def _held(cache) -> int:
    return sum(t.numel() * t.element_size() for la in cache.layers for t in (la.keys, la.values))


@pytest.mark.parametrize("case", sorted(_REAL))
def test_closed_form_equals_a_real_transformers_cache(case):
    """A tiny model of real Hugging Face code: prefill 20 tokens, decode 3, batch 2."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg_dict = _REAL[case]
    cfg = transformers.AutoConfig.for_model(**cfg_dict)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 128, (2, 20))
    cache = transformers.DynamicCache(config=cfg)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
        for _ in range(3):
            model(ids[:, :1], past_key_values=cache, use_cache=True)
    assert _held(cache) == kv_cache(cfg_dict).sequence_bytes(23, batch=2)


def test_closed_form_equals_a_real_whisper_cache():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    sizes = {
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "vocab_size": 100,
        "num_mel_bins": 8,
        "max_source_positions": 30,
        "max_target_positions": 40,
        "pad_token_id": 0,
        "decoder_start_token_id": 1,
    }
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**sizes)).eval()
    with torch.no_grad():
        out = model(
            input_features=torch.randn(2, 8, 60),
            decoder_input_ids=torch.ones(2, 5, dtype=torch.long),
            use_cache=True,
        )
    pkv = out.past_key_values
    held = _held(pkv.self_attention_cache) + _held(pkv.cross_attention_cache)
    config = {**sizes, "model_type": "whisper", "is_encoder_decoder": True}
    assert held == kv_cache(config, dtype="fp32").sequence_bytes(5, batch=2)  # 30 frames
