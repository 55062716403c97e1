"""Weights for inference (memlens.analytic.weights, formats.INFERENCE_FORMATS) by hand."""

from __future__ import annotations

import pytest

from memlens._errors import ConfigError, WorkloadError
from memlens._size import ParamTensor
from memlens.analytic.weights import (
    header_weights,
    inference_weights,
    scheme,
    scheme_from_config,
    scheme_from_header,
)
from memlens.formats import INFERENCE_FORMATS
from memlens.plan.serve import _tensors
from memlens.sources import bundled
from memlens.sources.weights import TensorInfo, WeightsSummary


def layout(fmt: str, shape: tuple[int, int], group: int = 128) -> dict[str, int]:
    f = INFERENCE_FORMATS[fmt]
    return {"payload": f.payload(shape).nbytes} | {
        c.name: c.nbytes for c in f.metadata(shape, group)
    }


def test_gptq_awq_fp8_layouts_of_one_linear():
    # [out 4096, in 11008], group 128: 86 groups along in
    assert layout("gptq-int4", (4096, 11008)) == {
        "payload": 4096 * 11008 // 2,  # qweight int32 [in / 8, out]
        "qzeros": 86 * 4096 // 2,  # int32 [in / G, out / 8]
        "scales": 86 * 4096 * 2,  # fp16 [in / G, out]
        "g_idx": 11008 * 4,  # int32 [in]
    }
    assert "g_idx" not in layout("awq-int4", (4096, 11008))
    assert layout("fp8-block", (7168, 2048))["weight_scale_inv"] == 56 * 16 * 4
    assert layout("fp8-channel", (7168, 2048))["weight_scale"] == 7168 * 4
    assert layout("fp8", (7168, 2048)) == {"payload": 7168 * 2048, "scale": 4}


def tiny(tp: int, sch_name: str = "gptq-int4"):
    h, kv, inter, vocab = 256, 64, 512, 1000
    tensors = [
        ParamTensor("embed_tokens.weight", (vocab, h), "embeddings"),
        ParamTensor("layers.0.input_layernorm.weight", (h,), "norms"),
        ParamTensor("layers.0.self_attn.q_proj.weight", (h, h), "weights"),
        ParamTensor("layers.0.self_attn.k_proj.weight", (kv, h), "weights"),
        ParamTensor("layers.0.self_attn.v_proj.weight", (kv, h), "weights"),
        ParamTensor("layers.0.self_attn.o_proj.weight", (h, h), "weights"),
        ParamTensor("layers.0.mlp.down_proj.weight", (h, inter), "weights"),
        ParamTensor("lm_head.weight", (vocab, h), "head"),
    ]
    return inference_weights(tensors, scheme(sch_name, "fp16"), tp=tp, kv_heads=1, vocab=vocab)


def test_tensor_parallel_shards_by_hand():
    one = tiny(1)
    assert one.payload_bytes == (256 * 256 * 2 + 64 * 256 * 2 + 256 * 512) // 2
    assert one.kept_bytes == (2 * 1000 * 256 + 256) * 2
    two = tiny(2)
    # vocabulary padded to 1024 and split; the norm replicated
    assert two.kept_bytes == (2 * 512 * 256 + 256) * 2
    # one KV head (64 rows) on 2 GPUs: each keeps it whole; o_proj/down_proj split their input
    assert two.payload_bytes == (128 * 256 + 64 * 256 * 2 + 256 * 128 + 256 * 256) // 2
    assert any("whole K/V head" in n for n in two.notes)
    assert two.largest_linear == (256, 256)


def test_dequantisation_temporaries():
    nf4 = tiny(1, "bnb-nf4")
    assert nf4.dequant_bytes(1, "sm80") == (0, "gemv_4bit (one token)")
    assert nf4.dequant_bytes(8, "sm80")[0] == 256 * 512 * 2  # the largest weight in fp16
    gptq = tiny(1)
    assert gptq.dequant_bytes(4096, "sm90")[0] == 0  # Marlin
    assert gptq.dequant_bytes(64, "sm75")[0] == 256 * 512 * 2  # ExLlama above 50 rows
    assert gptq.dequant_bytes(8, "sm75")[0] == 0
    fp8 = tiny(1, "fp8")
    assert fp8.dequant_bytes(100, "sm90")[0] == 100 * 512 + 4 * 100  # input quantised
    assert fp8.dequant_bytes(100, "sm80")[0] == 0


def test_schemes_from_config_and_header():
    gptq = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}
    assert scheme_from_config({"quantization_config": gptq}, "bf16").name == "gptq-int4"
    asym = scheme_from_config({"quantization_config": gptq | {"sym": False}}, "bf16")
    assert not asym.marlin and asym.name == "gptq-int4"  # gptq_marlin takes symmetric only
    one = scheme_from_config({"quantization_config": gptq | {"group_size": -1}}, "bf16")
    assert one.group_size is None and "one group" in one.source
    bnb = {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
    s = scheme_from_config({"quantization_config": bnb}, "fp16")
    assert (s.name, s.format, s.compute_dtype) == ("bnb-nf4", "nf4", "bf16")
    fp8 = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    assert scheme_from_config({"quantization_config": fp8}, "bf16").name == "fp8-block"
    assert scheme_from_config({}, "bf16") is None
    with pytest.raises(ConfigError, match="not modelled"):
        scheme_from_config({"quantization_config": {"quant_method": "hqq"}}, "bf16")
    with pytest.raises(ConfigError, match="4-bit"):
        scheme_from_config({"quantization_config": gptq | {"bits": 3}}, "bf16")
    names = ["m.q_proj.qweight", "m.q_proj.qzeros", "m.q_proj.scales", "m.q_proj.g_idx"]
    assert scheme_from_header(names, ["I32"] * 4, "fp16").name == "gptq-int4"
    assert scheme_from_header(names[:3], ["I32"] * 3, "fp16").name == "awq-int4"
    assert (
        scheme_from_header(["w.weight", "w.weight_scale_inv"], ["F8_E4M3", "F32"], "bf16").name
        == "fp8-block"
    )
    assert scheme_from_header(["w.weight"], ["BF16"], "bf16") is None
    with pytest.raises(WorkloadError):
        scheme("int3", "bf16")


def test_header_bytes_are_the_checkpoints():
    tensors = (
        TensorInfo("a.qweight", (64, 512), "I32", 64 * 512 * 4),
        TensorInfo("a.qzeros", (4, 64), "I32", 4 * 64 * 4),
        TensorInfo("a.scales", (4, 512), "F16", 4 * 512 * 2),
        TensorInfo("a.g_idx", (512,), "I32", 512 * 4),
    )
    summary = WeightsSummary("safetensors", ("x.safetensors",), tensors)
    w = header_weights(summary, "fp16", tp=2)
    assert w.scheme.name == "gptq-int4" and w.method == "safetensors header"
    assert w.total_bytes == -(-sum(t.nbytes for t in tensors) // 2)


@pytest.mark.parametrize("name", ["llama-3-8b", "qwen2.5-7b", "gpt2", "mistral-7b-v0.1"])
def test_closed_form_tensors_count_the_bundled_params(name):
    tensors, method = _tensors(name, bundled.config(name))
    assert method == "closed form from the config"
    assert sum(t.numel for t in tensors) == bundled.names()[name]["params"]
