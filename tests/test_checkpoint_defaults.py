"""The checkpoint's own settings are the defaults: its torch_dtype (inference), its
quantization_config, its positions; an explicit option wins and the output says which."""

from __future__ import annotations

import json
import struct

import pytest
from typer.testing import CliRunner

import memlens
from memlens._setup import resolve_model
from memlens.cli import app
from memlens.sources.huggingface import checkpoint_settings
from memlens.workload import Workload

from conftest import cli_exit_code

pytest.importorskip("transformers")

TINY = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 64,
}


def _folder(tmp_path, **changes):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, **changes}))
    return str(tmp_path)


def _resolved(model, **fields):
    work = Workload.from_fields(fields)
    spec, work = resolve_model(model, work, fields)
    return work, spec.metadata["settings"]


def test_llama_3_8b_inference_runs_in_its_config_dtype():
    work, settings = _resolved("llama-3-8b", mode="inference")
    assert work.precision == "bf16"
    assert settings["precision"] == "bf16 from config torch_dtype"
    work, settings = _resolved("llama-3-8b", mode="inference", precision="fp32")
    assert work.precision == "fp32" and settings["precision"] == "fp32 (given)"
    work, settings = _resolved("llama-3-8b")  # training keeps fp32 master weights, and says so
    assert work.precision == "fp32" and "the config torch_dtype is bf16" in settings["precision"]
    work, _ = _resolved("gpt2", mode="inference")  # a config without torch_dtype
    assert work.precision == "fp32"


def test_estimate_and_header_state_the_precision_and_its_source(tmp_path):
    folder = _folder(tmp_path, torch_dtype="float16")
    est = memlens.estimate(folder, mode="inference", seq_len=16, device="cpu")
    given = memlens.estimate(folder, mode="inference", seq_len=16, precision="fp16", device="cpu")
    assert est.peak_bytes == given.peak_bytes and est.workload.precision == "fp16"
    assert est.strategies["settings"]["precision"] == "fp16 from config torch_dtype"
    out = CliRunner().invoke(app, ["estimate", folder, "--inference", "--seq-len", "16"])
    assert out.exit_code == 0, out.output
    assert "fp16 from config torch_dtype" in " ".join(out.output.split())
    out = CliRunner().invoke(app, ["estimate", folder, "--inference", "--seq-len", "16", "--json"])
    assert "fp16 from config torch_dtype" in out.output


def test_safetensors_header_gives_the_dtype_when_the_config_does_not(tmp_path):
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}})
    raw = header.encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(32))
    work, settings = _resolved(_folder(tmp_path), mode="inference")
    assert work.precision == "bf16"
    assert settings["precision"] == "bf16 from safetensors header (BF16 weights)"


def test_sequences_past_the_positions_are_refused_unless_allowed(tmp_path, capsys):
    with pytest.raises(memlens.WorkloadError, match=r"past the model's 1024 positions"):
        memlens.estimate("gpt2", seq_len=4096, mode="inference", device="cpu")
    folder = _folder(tmp_path)
    with pytest.raises(memlens.WorkloadError, match="allow_long_context for a model that"):
        memlens.estimate(folder, seq_len=128, mode="inference", device="cpu")
    est = memlens.estimate(folder, seq_len=128, mode="inference", allow_long_context=True)
    assert est.peak_bytes > 0
    assert cli_exit_code("estimate", "gpt2", "--inference", "--seq-len", "4096") != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--seq-len 4096: past the model's 1024 positions" in err and "Traceback" not in err
    assert "--allow-long-context" in err


def test_bitsandbytes_config_sets_the_quantisation(tmp_path):
    quant = {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16",
    }
    folder = _folder(tmp_path, quantization_config=quant, torch_dtype="bfloat16")
    work, settings = _resolved(folder, mode="inference")
    assert (work.quantize, work.bnb_compute_dtype, work.precision) == ("nf4", "bf16", "bf16")
    assert settings["quantize"].startswith("nf4 from config quantization_config")
    work, _ = _resolved(folder, mode="inference", quantize="int8")  # explicit wins
    assert work.quantize == "int8"


def test_gptq_config_is_refused_rather_than_traced_unquantised(tmp_path):
    folder = _folder(
        tmp_path, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128}
    )
    with pytest.raises(memlens.ConfigError, match=r"gptq 4-bit, group 128.*--quantize"):
        _resolved(folder, mode="inference")
    work, _ = _resolved(folder, mode="inference", quantize="int4")
    assert work.quantize == "int4"


def test_checkpoint_settings_read_the_config():
    assert checkpoint_settings({"dtype": "bfloat16"})["precision"] == ("bf16", "config dtype")
    assert "precision" not in checkpoint_settings({"torch_dtype": "auto"})
    t5 = checkpoint_settings({"model_type": "t5", "n_positions": 512})
    assert "max_positions" not in t5  # relative positions extrapolate
    nested = checkpoint_settings({"text_config": {"max_position_embeddings": 8192}})
    assert nested["max_positions"] == (8192, "max_position_embeddings")
    fp8 = checkpoint_settings({"quantization_config": {"quant_method": "fp8"}})
    assert fp8["quantization"][0]["quantize"] is None
