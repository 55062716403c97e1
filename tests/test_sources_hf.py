"""Hugging Face configs from a path or a Hub id: building, malformed files, offline use."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

from memlens._errors import ConfigError, UnknownModelError  # noqa: E402
from memlens.engine.build import build_fake  # noqa: E402
from memlens.sources import huggingface, registry  # noqa: E402
from memlens.workload import TASKS, Workload  # noqa: E402

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
# embeddings + 2 x (attention + MLP + 2 norms) + final norm + head
TINY_LLAMA_PARAMS = (
    1000 * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64 + 64 * 1000
)


def write_config(folder, cfg) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return str(folder / "config.json")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_config_file_and_folder_build(tmp_path):
    path = write_config(tmp_path / "tiny-llama", TINY_LLAMA)
    for text in (path, str(tmp_path / "tiny-llama")):
        spec = registry.resolve(text)
        assert (spec.name, spec.source, spec.family) == ("tiny-llama", "hf", "causal-lm")
        b = build_fake(spec, Workload(batch=2))
        assert sum(p.numel() for p in b.model.parameters()) == TINY_LLAMA_PARAMS
        assert tuple(b.inputs.kwargs["input_ids"].shape) == (2, 256)  # the model's maximum


def test_a_folder_named_like_a_bundled_model_is_the_folder(tmp_path, monkeypatch):
    write_config(tmp_path / "models" / "gpt2", TINY_LLAMA)
    monkeypatch.chdir(tmp_path)
    assert registry.resolve("models/gpt2").source == "hf"


def test_task_reaches_a_config_file(tmp_path):
    spec = registry.resolve(write_config(tmp_path / "m", TINY_LLAMA), task="seq-cls")
    assert (
        type(build_fake(spec, Workload(batch=2)).model).__name__ == "LlamaForSequenceClassification"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_type": None}, "'model_type'"),
        ({"hidden_size": "768x"}, "'hidden_size'"),
        ({"num_hidden_layers": 2.5}, "'num_hidden_layers'"),
        ({"vocab_size": True}, "'vocab_size'"),
        ({"text_config": {"hidden_size": -1}}, "'text_config.hidden_size'"),
    ],
)
def test_malformed_config_names_the_file_and_field(tmp_path, change, field):
    cfg = {**TINY_LLAMA, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = write_config(tmp_path / "bad", cfg)
    with pytest.raises(ConfigError) as err:
        registry.resolve(path)
    assert field in str(err.value) and path in str(err.value)


def test_invalid_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(ConfigError, match=r"config\.json is not valid JSON.*line 2"):
        registry.resolve(str(path))


def test_unknown_model_type_is_refused(tmp_path):
    path = write_config(tmp_path / "m", {**TINY_LLAMA, "model_type": "no-such-arch"})
    with pytest.raises(ConfigError, match="'no-such-arch' is unknown to transformers"):
        registry.resolve(path)


def test_remote_code_needs_permission(tmp_path):
    cfg = {**TINY_LLAMA, "model_type": "my-arch", "auto_map": {"AutoConfig": "cfg.MyConfig"}}
    path = write_config(tmp_path / "m", cfg)
    with pytest.raises(ConfigError, match="--trust-remote-code"):
        registry.resolve(path)


REMOTE_CONFIG = """
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, hidden_size=8, vocab_size=100, **kwargs):
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        super().__init__(**kwargs)
"""
REMOTE_MODEL = """
import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids):
        return self.embed(input_ids)
"""


def test_remote_code_runs_when_trusted(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = tmp_path / "tiny-remote"
    auto_map = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModel": "modeling_tiny.TinyModel",
    }
    write_config(folder, {"model_type": "tiny-remote", "auto_map": auto_map, "vocab_size": 100})
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    spec = registry.resolve(str(folder), trust_remote_code=True)
    b = build_fake(spec, Workload(seq_len=16))
    assert sum(p.numel() for p in b.model.parameters()) == 100 * 8
    assert tuple(b.inputs.kwargs["input_ids"].shape) == (1, 16)


def test_unknown_hub_id_offline_is_one_clear_line(offline_hub, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("offline, yet the network was tried")

    monkeypatch.setattr(huggingface.socket, "create_connection", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(ConfigError) as err:
        registry.resolve("some-org/not-a-bundled-model")
    message = str(err.value)
    assert "\n" not in message
    assert "offline" in message and "config.json" in message


def test_unreachable_hub_is_offline_too(offline_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface, "_hub_reachable", lambda endpoint: False)
    with pytest.raises(ConfigError, match=r"offline.*did you mean 'llama-3-8b'"):
        registry.resolve("meta-llama/Meta-Llama-3-8BB")


def test_hub_id_from_the_local_cache(offline_hub):
    snapshot = offline_hub / "models--some-org--tiny" / "snapshots" / "abc123"
    write_config(snapshot, TINY_LLAMA)
    (offline_hub / "models--some-org--tiny" / "refs").mkdir()
    (offline_hub / "models--some-org--tiny" / "refs" / "main").write_text("abc123")
    spec = registry.resolve("some-org/tiny")
    assert (spec.name, spec.source, spec.metadata["hub_id"]) == (
        "some-org/tiny",
        "hf",
        "some-org/tiny",
    )


def test_hub_download_fetches_only_config_json(offline_hub, tmp_path, monkeypatch):
    path = write_config(tmp_path / "dl", TINY_LLAMA)
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return path

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface, "_hub_reachable", lambda endpoint: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert registry.resolve("some-org/remote").source == "hf"
    assert calls == [("some-org/remote", "config.json")]


def test_missing_hub_repo_is_one_line(offline_hub, monkeypatch):
    def download(repo_id, filename, **kwargs):
        raise huggingface_hub.errors.RepositoryNotFoundError("404 Client Error\nmore lines")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface, "_hub_reachable", lambda endpoint: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ConfigError, match="no such Hub repository") as err:
        registry.resolve("some-org/missing")
    assert "\n" not in str(err.value)


def test_timm_ids_and_plain_typos_stay_unknown_names(offline_hub):
    with pytest.raises(UnknownModelError):
        registry.resolve("timm/not_a_timm_model")
    with pytest.raises(UnknownModelError):
        registry.resolve("not-a-model-at-all")


# -- which inputs each kind of model gets --------------------------------------------------


def _inputs(name: str, task: str | None, mode: str) -> dict[str, tuple[int, ...]]:
    spec = registry.resolve(name, task=task)
    seq_len = None if spec.family == "vision" else 16  # an image model refuses a seq_len
    built = build_fake(spec, Workload(mode=mode, batch=2, seq_len=seq_len))
    return {k: tuple(v.shape) for k, v in built.inputs.kwargs.items()}


@pytest.mark.parametrize(
    ("name", "task", "mode", "expected"),
    [
        ("gpt2", None, "train", {"input_ids": (2, 16), "labels": (2, 16)}),
        ("gpt2", "seq-cls", "train", {"input_ids": (2, 16), "labels": (2,)}),
        ("bert-base-uncased", "masked-lm", "inference", {"input_ids": (2, 16)}),
        ("t5-small", None, "inference", {"input_ids": (2, 16), "decoder_input_ids": (2, 16)}),
        ("t5-small", None, "train", {"input_ids": (2, 16), "labels": (2, 16)}),
        ("t5-small", "base", "train", {"input_ids": (2, 16), "decoder_input_ids": (2, 16)}),
        ("vit-base-patch16-224", None, "train", {"pixel_values": (2, 3, 224, 224), "labels": (2,)}),
        (
            "whisper-small",
            None,
            "inference",
            {"input_features": (2, 80, 3000), "decoder_input_ids": (2, 16)},
        ),
    ],
)
def test_inputs_follow_the_modality_and_the_task(name, task, mode, expected):
    assert _inputs(name, task, mode) == expected


def test_every_task_of_the_workload_has_a_row():
    assert tuple(huggingface.TASKS_TABLE) == TASKS
