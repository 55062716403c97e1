"""Mixture-of-experts routing by policy (memlens.routing), checked against real CPU steps of
a tiny Mixtral (real Hugging Face code) whose router is forced to the same assignment."""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import memlens
from memlens.routing import assignment, capacity, expert_loads, parse_routing
from memlens.sources import bundled

pytest.importorskip("transformers")

EXPERTS, TOP_K, LAYERS = 4, 2, 2
TINY = {
    "model_type": "mixtral",
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": EXPERTS,
    "num_experts_per_tok": TOP_K,
    "vocab_size": 128,
    "max_position_embeddings": 256,
}
KW = {"batch": 2, "seq_len": 32, "device": "cpu"}


@pytest.mark.parametrize(
    ("tokens", "top_k", "experts"), [(10, 2, 8), (7, 3, 4), (64, 2, 4), (5, 1, 1)]
)
@pytest.mark.parametrize("policy", ["balanced", "worst", "capacity:1.5", "capacity:1"])
def test_assignment_realises_the_loads(tokens, top_k, experts, policy):
    idx = assignment(tokens, top_k, experts, policy)
    loads = torch.bincount(idx.flatten(), minlength=experts).tolist()
    assert loads == expert_loads(tokens, top_k, experts, policy)
    assert sum(loads) == tokens * top_k
    assert all(len(set(row)) == top_k for row in idx.tolist())  # a token's experts differ
    assert max(loads) == capacity(tokens, top_k, experts, policy)


def test_policies():
    assert expert_loads(10, 2, 8) == [3, 3, 3, 3, 2, 2, 2, 2]
    assert expert_loads(10, 2, 8, "worst") == [10, 10, 0, 0, 0, 0, 0, 0]
    assert expert_loads(10, 2, 8, "capacity:1.5") == [4, 4, 4, 4, 4, 0, 0, 0]
    assert parse_routing(" Capacity:1.250 ") == "capacity:1.25"
    for bad in ("capacity:0.5", "capacity:x", "random", 3):
        with pytest.raises(ValueError):
            parse_routing(bad)
    with pytest.raises(memlens.WorkloadError, match="moe_routing"):
        memlens.Workload(moe_routing="uniform")


def _forced_topk(policy: str, training: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixtral's router (``torch.topk`` over the experts) assigns tokens by ``policy``; in
    training the first (warm-up) step's routers route ``balanced``, as the estimate's do."""
    original, calls = torch.topk, [0]

    def topk(t, k, *args, **kwargs):
        values, indices = original(t, k, *args, **kwargs)
        real = not isinstance(t, FakeTensor)  # not a trace (measure may estimate first)
        if real and t.dim() == 2 and t.shape[-1] == EXPERTS and k == TOP_K:
            warm = training and calls[0] < LAYERS
            calls[0] += 1
            indices = assignment(t.shape[0], k, EXPERTS, "balanced" if warm else policy)
            values = t.gather(-1, indices)
        return torch.return_types.topk((values, indices))

    monkeypatch.setattr(torch, "topk", topk)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixtral")
    (folder / "config.json").write_text(json.dumps(TINY))
    return str(folder)


@pytest.mark.parametrize("mode", ["train", "inference"])
def test_tiny_mixtral_matches_real_runs_with_the_same_routing(tiny, mode, monkeypatch):
    peaks = {}
    for policy in ("balanced", "worst"):
        est = memlens.estimate(tiny, mode=mode, moe_routing=policy, **KW)
        assert any(f"MoE routing: {policy}" in u for u in est.unknowns)
        assert not any("data-dependent" in u for u in est.unknowns)  # routed, not read
        with monkeypatch.context() as m:
            _forced_topk(policy, mode == "train", m)
            real = memlens.measure(tiny, mode=mode, **KW)
        assert abs(est.peak_bytes - real.peak_bytes) <= 0.05 * real.peak_bytes, (policy, mode)
        peaks[policy] = est.peak_bytes
    # every token on the same experts: one expert's activations are all the tokens'
    assert peaks["worst"] != peaks["balanced"]
    if mode == "inference":
        assert peaks["worst"] > peaks["balanced"]


def test_bundled_mixtral_full_fine_tune_has_optimizer_state_for_every_expert(tmp_path):
    """The bundled Mixtral-8x7B's layers, two of them (the mechanism is per layer): Adam's
    two fp32 moments of every parameter, every expert's included."""
    cfg = dict(bundled.config("mixtral-8x7b"), num_hidden_layers=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    est = memlens.estimate(str(tmp_path), batch=1, seq_len=8, device="cpu")
    steps = 4 * len(list(_parameter_shapes(cfg)))  # one fp32 `step` per parameter
    assert est.breakdown["optimizer_state"] == 2 * 4 * est.num_params + steps


def _parameter_shapes(cfg):
    from memlens.engine.build import build_fake
    from memlens.sources.huggingface import spec_from_config

    spec = spec_from_config(cfg, name="m", source="hf", where="test")
    return [p.shape for p in build_fake(spec, memlens.Workload()).model.parameters()]
