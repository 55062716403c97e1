"""Generation traced (memlens.engine.generate): a real CPU generate() of a tiny Llama against
the estimate, the traced KV cache against the closed form (analytic/kv_cache) for every
bundled decoder LLM, and the attention's quadratic term with eager vs flash."""

from __future__ import annotations

import pytest

from memlens._errors import ConfigError, WorkloadError
from memlens._generate import estimate_generation
from memlens.analytic.kv_cache import kv_cache
from memlens.measurement.generation import measure_generation_cpu
from memlens.sources import bundled
from memlens.sources.huggingface import spec_from_config
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import resolve_target
from memlens.workload import Workload

TINY_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
}


def _spec(cfg: dict, name: str = "tiny"):
    return spec_from_config(dict(cfg), name=name, source="test", where=name)


def _estimate(cfg: dict, device: str = "cpu", **fields):
    work = Workload(generate=True, **fields)
    return estimate_generation(_spec(cfg), work, resolve_target(device, None))


def test_tiny_llama_real_generate_within_2_percent():
    work = Workload(generate=True, prompt_len=96, new_tokens=5, attention="eager", sample=True)
    target = resolve_target("cpu", None)
    est = estimate_generation(_spec(TINY_LLAMA), work, target)
    real = measure_generation_cpu(_spec(TINY_LLAMA), work, WorkloadStrategies(work, target))
    steps = {s.name: s.peak_bytes for s in est.generation.steps}
    # the rise above the weights, the part generation adds, within 2% too
    base = real.baseline_bytes
    for name, measured in (
        ("prefill", real.prefill_peak_bytes),
        ("last decode", real.last_step_peak_bytes),
    ):
        assert abs(steps[name] - measured) <= 0.02 * (measured - base), (
            name,
            steps[name],
            measured,
        )
    assert est.breakdown["kv_cache"] > 0
    assert est.budget()[7][1] == est.breakdown["kv_cache"]


def _decoders() -> list[str]:
    return [n for n, m in bundled.names().items() if m["family"] == "causal-lm"]


@pytest.mark.parametrize("name", _decoders())
def test_traced_cache_equals_closed_form(name):
    """Real head dims and layer patterns, fewer layers (the cache is per layer)."""
    cfg = bundled.config(name)
    layers = 6 if "layer_types" in cfg or cfg.get("sliding_window_pattern") else 2
    cfg["num_hidden_layers"] = min(cfg.get("num_hidden_layers", layers), layers)
    if "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"][:layers]
    for experts in ("num_experts", "num_local_experts", "n_routed_experts"):
        if experts in cfg:  # experts hold no cache: fewer of them trace faster
            cfg[experts] = cfg.get("num_experts_per_tok", 2)
    P = 24
    est = _estimate(cfg, prompt_len=P, new_tokens=1)
    closed = kv_cache(cfg, dtype="fp32")
    assert est.generation.steps[0].kv_cache_bytes == closed.sequence_bytes(P)


def test_last_decode_cache_and_growth():
    est = _estimate(TINY_LLAMA, prompt_len=32, new_tokens=10)
    closed = kv_cache(TINY_LLAMA, dtype="fp32")
    last = est.generation.steps[-1]
    assert last.cached_tokens == 32 + 10 - 2
    assert last.kv_cache_bytes == closed.sequence_bytes(32 + 10 - 1)
    assert est.generation.kv_growth_per_token == closed.bytes_per_token()
    assert [p.token for p in est.generation.tokens][0] == 1
    assert est.generation.tokens[-1].token == 10


def test_quadratic_term_eager_vs_flash_on_a_long_prompt():
    cfg = dict(TINY_LLAMA, max_position_embeddings=4096)
    fields = dict(prompt_len=512, new_tokens=1, precision="bf16", device="a100-80gb")
    eager = _estimate(cfg, attention="eager", **fields).generation.steps[0]
    sdpa = _estimate(cfg, attention="sdpa", **fields).generation.steps[0]
    flash = _estimate(cfg, attention="flash", **fields).generation.steps[0]
    heads_scores = 1 * 4 * 512 * 512 * 2  # batch x heads x seq x seq in bf16
    assert eager.quadratic_bytes >= heads_scores
    assert flash.quadratic_bytes == 0 and sdpa.quadratic_bytes == 0
    assert eager.peak_bytes - flash.peak_bytes >= heads_scores
    chunked = _estimate(cfg, attention="eager", prefill_chunk=64, **fields).generation.steps[0]
    assert chunked.quadratic_bytes < eager.quadratic_bytes // 4
    # a prompt as long as the hidden size: the hidden states are not scores
    same = _estimate(TINY_LLAMA, prompt_len=64, new_tokens=1, attention="sdpa")
    assert same.generation.steps[0].quadratic_bytes == 0


def test_beam_search_caches_every_beam():
    est = _estimate(TINY_LLAMA, prompt_len=16, new_tokens=4, num_beams=3)
    closed = kv_cache(TINY_LLAMA, dtype="fp32")
    steps = est.generation.steps
    assert steps[0].kv_cache_bytes == closed.sequence_bytes(16, batch=3)
    assert steps[-1].kv_cache_bytes == closed.sequence_bytes(16 + 4 - 1, batch=3)


def test_refusals():
    with pytest.raises(ConfigError, match="kv_dtype"):
        _estimate(TINY_LLAMA, prompt_len=8, new_tokens=2, kv_dtype="fp8")


def test_json_and_budget_row():
    from memlens.report.json import to_json

    est = _estimate(TINY_LLAMA, prompt_len=16, new_tokens=3)
    out = to_json(est)
    assert out["kind"] == "estimate"
    assert out["budget"]["kv_cache"] == est.breakdown["kv_cache"] > 0
    steps = out["generation"]["steps"]
    assert [s["name"] for s in steps] == ["prefill", "first decode", "last decode"]
    assert steps[-1]["kv_cache_bytes"] == kv_cache(TINY_LLAMA, dtype="fp32").sequence_bytes(18)


def test_prompt_past_the_positions_refused():
    with pytest.raises(WorkloadError, match="positions"):
        _estimate(TINY_LLAMA, prompt_len=500, new_tokens=20)


def test_cli_generate(tmp_path):
    import json

    from typer.testing import CliRunner

    from memlens.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    args = ["estimate", str(path), "--generate", "--prompt-len", "300", "--new-tokens", "4"]
    args += ["--device", "a100-80gb", "--attention", "eager", "--precision", "bf16"]
    text = CliRunner().invoke(app, args, terminal_width=120)
    assert text.exit_code == 0, text.output
    assert "generation: prompt 300, 4 new tokens" in text.output
    assert "quadratic term" in text.output
    out = CliRunner().invoke(app, [*args, "--json"])
    doc = json.loads(out.output)
    assert doc["budget"]["kv_cache"] > 0
    assert doc["generation"]["steps"][0]["quadratic_bytes"] > 0


def test_cli_compare_on_the_cpu(tmp_path):
    import json

    from typer.testing import CliRunner

    from memlens.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    args = ["estimate", str(path), "--generate", "--prompt-len", "64", "--new-tokens", "3"]
    out = CliRunner().invoke(app, [*args, "--device", "cpu", "--compare", "--json"])
    doc = json.loads(out.output)
    steps = doc["generation"]["steps"]
    real = doc["measured"]
    assert abs(steps[0]["peak_bytes"] - real["prefill_peak_bytes"]) <= 0.02 * steps[0]["peak_bytes"]
    assert (
        abs(steps[-1]["peak_bytes"] - real["last_step_peak_bytes"])
        <= 0.02 * real["last_step_peak_bytes"]
    )
    refused = CliRunner().invoke(app, [*args, "--device", "a100-80gb", "--compare"])
    assert refused.exit_code != 0
