"""Bundled Hugging Face configs: published parameter counts, names, heads and inputs."""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("transformers")

from memlens._errors import ConfigError, UnknownModelError  # noqa: E402
from memlens.engine.build import Built, build_fake  # noqa: E402
from memlens.sources import bundled, catalog, huggingface, registry  # noqa: E402
from memlens.workload import Workload  # noqa: E402

#: Published counts (shared/reference/models.json, "llm"): keras-hub presets, Hugging Face
#: configs, or closed form from the config where marked "derived" there.
REFERENCE_PARAMS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "bert-base-uncased": 109_482_240,
    "bert-large-uncased": 335_141_888,
    "t5-small": 60_506_624,
    "t5-base": 222_903_552,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "mistral-7b-v0.1": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-7b": 7_615_616_512,
    "phi-3-mini-4k": 3_821_079_552,
    "gemma-2b": 2_506_172_416,
    "opt-1.3b": 1_315_758_080,
}
GPT3_PAPER_PARAMS = 175_000_000_000  # "Language Models are Few-Shot Learners", Table 2.1


@functools.cache
def built(name: str, mode: str = "train", batch: int = 2, seq_len: int | None = None) -> Built:
    return build_fake(bundled.resolve(name), Workload(mode=mode, batch=batch, seq_len=seq_len))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied parameters once


def test_every_reference_llm_is_bundled():
    assert set(REFERENCE_PARAMS) | {"gpt-3-175b"} <= set(bundled.names())


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_param_count_matches_reference(name):
    assert n_params(built(name).model) == REFERENCE_PARAMS[name]


def test_gpt3_is_within_half_a_percent_of_175b():
    n = n_params(built("gpt-3-175b").model)
    assert n == 174_604_259_328  # GPT-2 layout at 96 x 12288, vocabulary 50257
    assert abs(n - GPT3_PAPER_PARAMS) / GPT3_PAPER_PARAMS < 0.005


@pytest.mark.parametrize("name", sorted(bundled.names()))
def test_cached_param_count_is_the_fake_builds(name):
    assert bundled.names()[name]["params"] == n_params(built(name).model)


def test_tied_embeddings_are_one_parameter():
    model = built("gpt2").model
    assert model.lm_head.weight is model.transformer.wte.weight


def test_names_carry_metadata_without_importing_a_model():
    meta = bundled.names()["llama-3-8b"]
    assert meta == {
        "family": "causal-lm",
        "source": "bundled",
        "params": 8_030_261_248,
        "hub_id": "meta-llama/Meta-Llama-3-8B",
        "model_type": "llama",
        "aliases": ["meta-llama/Meta-Llama-3-8B", "Meta-Llama-3-8B"],
    }
    assert bundled.names()["bert-base-uncased"]["family"] == "encoder"
    assert bundled.names()["whisper-small"]["family"] == "audio"


@pytest.mark.parametrize("name", sorted(bundled.names()))
def test_bundled_config_is_a_clean_hub_config(name):
    cfg = bundled.config(name)
    assert "_memlens" not in cfg and cfg["architectures"]
    huggingface.check_config(cfg, name)  # sizes are positive integers


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("llama-3-8b", "llama-3-8b"),
        ("Llama-3-8B", "llama-3-8b"),
        ("meta-llama/Meta-Llama-3-8B", "llama-3-8b"),
        ("llama3-8b", "llama-3-8b"),
        ("gpt2", "gpt2"),
        ("GPT-2", "gpt2"),
        ("openai-community/gpt2", "gpt2"),
        ("meta-llama/Llama-3.1-405B", "llama-3.1-405b"),
        ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
        ("google-bert/bert-base-uncased", "bert-base-uncased"),
    ],
)
def test_name_variants_resolve(text, canonical):
    spec = registry.resolve(text)
    assert (spec.name, spec.source) == (canonical, "bundled")


@pytest.mark.parametrize("typo", ["llama-3-8bb", "lama3"])
def test_typo_suggests_close_names(typo):
    with pytest.raises(UnknownModelError) as err:
        registry.resolve(typo)
    assert "llama-3-8b" in err.value.suggestions


def test_causal_lm_inputs_are_batch_by_seq_len_with_labels_when_training():
    spec = bundled.resolve("llama-3-8b")
    assert (spec.family, spec.loss_kind, spec.metadata["seq_len"]) == ("causal-lm", "model", 512)
    train = built("llama-3-8b", "train", 3, 64).inputs.kwargs
    assert tuple(train["input_ids"].shape) == (3, 64)
    assert train["labels"] is train["input_ids"]
    infer = built("llama-3-8b", "inference", 3, 64).inputs.kwargs
    assert set(infer) == {"input_ids"}


def test_default_seq_len_is_capped_by_the_model():
    assert built("clip-vit-base-patch32-text").inputs.kwargs["input_ids"].shape[-1] == 77
    assert built("gpt2").inputs.kwargs["input_ids"].shape[-1] == 512


def test_seq2seq_has_decoder_inputs():
    assert set(built("t5-small", "inference").inputs.kwargs) == {"input_ids", "decoder_input_ids"}
    assert set(built("t5-small", "train").inputs.kwargs) == {"input_ids", "labels"}


def test_whisper_has_input_features_and_decoder_tokens():
    spec = bundled.resolve("whisper-small")
    assert (spec.family, spec.metadata["input_shape"]) == ("audio", [80, 3000])
    kwargs = built("whisper-small", "inference").inputs.kwargs
    assert tuple(kwargs["input_features"].shape) == (2, 80, 3000)
    assert tuple(kwargs["decoder_input_ids"].shape) == (2, 448)


def test_image_models_take_pixel_values_at_their_size():
    kwargs = built("vit-base-patch16-224").inputs.kwargs
    assert tuple(kwargs["pixel_values"].shape) == (2, 3, 224, 224)
    assert tuple(kwargs["labels"].shape) == (2,)
    spec = bundled.resolve("clip-vit-base-patch32-vision")
    assert spec.loss_kind == "mean"
    shape = Workload(input_shape=(3, 336, 336))
    assert tuple(build_fake(spec, shape).inputs.kwargs["pixel_values"].shape) == (1, 3, 336, 336)


def test_models_are_float32_with_sdpa_and_the_configs_cache_switch():
    model = built("llama-3-8b").model
    assert model.lm_head.weight.dtype == torch.float32  # the config says bfloat16
    assert model.config._attn_implementation == "sdpa"
    assert model.config.use_cache is True  # the config's (transformers' default)
    spec = registry.resolve("llama-3-8b")
    off = build_fake(spec, Workload(use_cache=False)).model
    assert off.config.use_cache is False


def test_bert_defaults_to_the_encoder_and_task_picks_a_head():
    spec = registry.resolve("bert-base-uncased")
    assert (spec.metadata["task"], spec.loss_kind) == ("base", "mean")
    mlm = registry.resolve("bert-base-uncased", task="masked-lm")
    assert (mlm.family, mlm.loss_kind, "params" in mlm.metadata) == ("masked-lm", "model", False)
    b = build_fake(mlm, Workload(seq_len=16))
    assert type(b.model).__name__ == "BertForMaskedLM"
    assert tuple(b.inputs.kwargs["labels"].shape) == (1, 16)
    cls = build_fake(registry.resolve("gpt2", task="seq-cls"), Workload(batch=4, seq_len=8))
    assert type(cls.model).__name__ == "GPT2ForSequenceClassification"
    assert tuple(cls.inputs.kwargs["labels"].shape) == (4,)


def test_bad_task_is_refused():
    with pytest.raises(ConfigError, match="unknown task"):
        registry.resolve("gpt2", task="translation")
    with pytest.raises(ConfigError, match="no causal-lm model for model_type 'vit'"):
        registry.resolve("vit-base-patch16-224", task="causal-lm")


@pytest.mark.parametrize(
    "name", ["gpt2", "t5-small", "vit-base-patch16-224", "whisper-small", "llama-3-8b"]
)
def test_inputs_fit_the_model_on_fake_tensors(name):
    b = built(name, "train", 1, None if name.startswith("vit") else 32)  # ViT reads no tokens
    b.model.eval()  # training-only layer drop reads a random value
    try:
        with b.mode, torch.no_grad():
            out = b.model(**b.inputs.kwargs)
    finally:
        b.model.train()
    assert out.loss is not None


def test_catalog_rows_know_params_without_building():
    rows = {r["name"]: r for r in catalog.list_models()}
    assert rows["llama-3-8b"] == {
        "name": "llama-3-8b",
        "family": "causal-lm",
        "source": "bundled",
        "params": 8_030_261_248,
    }
    if "resnet50" in rows:  # torchvision installed: its weights' metadata
        assert rows["resnet50"]["params"] == 25_557_032
    only = catalog.list_models(source="bundled")
    assert {r["source"] for r in only} == {"bundled"} and len(only) == len(bundled.names())


def test_catalog_counts_by_fake_build_on_request():
    pytest.importorskip("torchvision")
    assert catalog._fake_count("resnet18") == 11_689_512
    assert catalog._fake_count("not-a-model") is None
