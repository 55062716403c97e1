"""Hugging Face ``transformers`` models from a ``config.json``, never from weights.

A model comes from a ``config.json`` file, a folder holding one, a Hub id (``org/name``: only
its ``config.json``, from the local Hugging Face cache or else downloaded), or a config bundled
with memlens (:mod:`memlens.sources.bundled`). The module is built with ``from_config`` in
float32 (the workload's precision decides the step's dtypes) and the config's ``use_cache``
unless the workload's ``use_cache`` says otherwise: with it on (transformers' default) a
forward pass returns every layer's keys and values in ``past_key_values``, held as long as
the output is (by the training loop: :class:`memlens.engine.step.Carry`).
Attention code (:func:`attn_implementation`): the workload's ``attention`` option (``eager``
builds with ``attn_implementation="eager"``, ``sdpa``/``flash``/``mem-efficient`` with
``"sdpa"``, whose kernel the engine then picks); with ``auto``, the config's own
``attn_implementation`` if it names one, else transformers' default (SDPA where the model
supports it, eager otherwise). ``PretrainedConfig.from_dict`` drops the key from the dict
(``config_dict["attn_implementation"] = kwargs.pop("attn_implementation", None)`` in
configuration_utils.py), so it is read from the config file and passed to the build.
On fake tensors transformers' weight initialisation is skipped. A config whose model code
lives in its repository (``auto_map``) is refused unless ``trust_remote_code`` is given.

Which head is built (``task``, a row of :data:`TASKS_TABLE`):

- default: the class named by the config's ``architectures`` (``LlamaForCausalLM``), whose
  suffix also gives the task; a bundled config may name a different default (BERT: ``base``,
  the encoder with pooler that published counts describe);
- ``causal-lm``, ``masked-lm``, ``seq2seq``, ``seq-cls``, ``image-cls``, ``base``: the
  matching ``AutoModelFor...`` class (``base``: ``AutoModel``).

Example inputs (``make_inputs``), ``batch`` from the workload, come from the model's modality
(a row of :data:`MODALITIES`: what it reads, found from its config) and its task:

- text: ``input_ids`` of ``workload.seq_len`` tokens, by default 512 or the model's maximum
  if shorter (the common fine-tuning length, and CLIP's 77); no ``attention_mask``, as in
  an unpadded (packed) batch, since a mask makes transformers inspect its values;
- images: ``pixel_values`` at the config's ``num_channels`` x ``image_size``; a dual encoder
  such as CLIP (its ``base`` model) reads both;
- audio (Whisper): ``input_features`` of ``num_mel_bins`` x 3000 frames (30 s) and decoder
  tokens of ``seq_len``, by default ``max_target_positions`` (448);
- encoder-decoder models (T5, Whisper) built as ``seq2seq`` or ``base``: decoder tokens as
  long as the encoder's text (``decoder_input_ids``; in training, ``labels``, which the model
  shifts into decoder inputs);
- ``workload.input_shape`` (one sample, no batch dimension) replaces the image or audio shape.

Training passes ``labels`` of the task's kind and reads ``output.loss`` (loss kind
``"model"``): the loss is the model's own, with its shift and its float32 upcast of the
logits. Causal LMs use the inputs as labels; ``base`` models have no loss of their own and use
``"mean"``.

torch is imported by the functions that build models and inputs, not by this module.
"""

from __future__ import annotations

import copy
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from memlens._errors import ConfigError, HeaderError, MissingExtraError, WorkloadError
from memlens.sources.base import Inputs, ModelSpec, build_workload
from memlens.workload import TASKS, Workload

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Default tokens per sample: a common fine-tuning length, cut to the model's maximum.
DEFAULT_SEQ_LEN = 512
#: Whisper's encoder takes exactly 30 s of audio: 3000 frames of 10 ms, two per position.
_AUDIO_FRAMES_PER_POSITION = 2

#: Size fields that must be positive integers (``null`` allowed) wherever they appear.
_INT_FIELDS = frozenset({
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim",
    "n_embd", "n_layer", "n_head", "n_positions", "n_inner", "n_ctx",
    "d_model", "d_ff", "d_kv", "num_layers", "num_decoder_layers", "num_heads", "ffn_dim",
    "word_embed_proj_dim", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins",
    "max_source_positions", "max_target_positions", "num_channels", "num_local_experts",
    "num_experts_per_tok", "type_vocab_size", "projection_dim", "num_labels",
})  # fmt: skip
#: Size fields that may also be a list of positive integers (height, width).
_INT_OR_LIST_FIELDS = frozenset({"image_size", "patch_size"})

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise MissingExtraError("transformers", "hf", "Hugging Face models") from e
    # Advice meant for real runs ("pass an attention_mask") is noise beside a memory estimate.
    transformers.logging.set_verbosity_error()
    return transformers


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"4.46.3"`` -> ``(4, 46, 3)``; a pre-release suffix (``"5.0.0rc1"``) is dropped."""
    return tuple(int(m) for m in re.findall(r"\d+", version.split("rc")[0].split(".dev")[0])[:3])


# --- config.json ----------------------------------------------------------------------------


#: Largest config.json read (real ones are a few KiB; a multimodal one tens of KiB).
MAX_CONFIG_BYTES = 16 * 2**20


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (at most :data:`MAX_CONFIG_BYTES`, nested at most
    :data:`~memlens.sources.weights.MAX_JSON_DEPTH` deep, no repeated key); a ConfigError
    says what is wrong with it."""
    from memlens.sources.weights import load_json

    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config")
        data = load_json(path.read_bytes(), str(path))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except HeaderError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


#: ``torch_dtype`` / ``dtype`` of a config -> the precision it names.
_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
#: Configs whose ``n_positions`` is no limit: T5's relative position buckets extrapolate.
_RELATIVE_POSITIONS = frozenset({"t5", "mt5", "umt5", "longt5"})
#: bitsandbytes ``bnb_4bit_compute_dtype`` -> the ``bnb_compute_dtype`` option.
_BNB_COMPUTE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def checkpoint_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint's ``config.json`` says about how it runs, each as ``(value, where)``:

    - ``precision``: its ``torch_dtype`` (``dtype`` since transformers 4.56), the dtype its
      weights are stored and loaded in (``from_pretrained(torch_dtype="auto")``, vLLM's
      ``--dtype auto``); ``auto`` or an unknown name is no setting;
    - ``quantization``: its ``quantization_config``: the method, bits, group size, compute
      dtype (transformers' ``GPTQConfig``, ``AwqConfig``, ``BitsAndBytesConfig``,
      ``FbgemmFp8Config`` / ``FineGrainedFP8Config`` in ``utils/quantization_config.py``);
    - ``max_positions``: ``max_position_embeddings`` (or ``n_positions``) of its text model,
      the longest sequence its position embeddings or RoPE were trained for.
    """
    out: dict[str, Any] = {}
    for key in ("torch_dtype", "dtype"):
        name = cfg.get(key)
        if isinstance(name, str) and name.removeprefix("torch.") in _DTYPES:
            out["precision"] = (_DTYPES[name.removeprefix("torch.")], f"config {key}")
            break
    quant = cfg.get("quantization_config")
    if isinstance(quant, dict):
        out["quantization"] = (_quantization(quant), "config quantization_config")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    keys = ["max_position_embeddings"]
    if cfg.get("model_type") not in _RELATIVE_POSITIONS:
        keys.append("n_positions")
    for key in keys:
        if _positive_int(text.get(key)):
            out["max_positions"] = (text[key], key)
            break
    return out


def _quantization(quant: Mapping[str, Any]) -> dict[str, Any]:
    """A ``quantization_config`` as ``{method, bits, group_size, quantize, compute_dtype}``:
    ``quantize`` is the :data:`memlens.workload.QUANTIZE` format that stores it (None: no
    layer of the trace stores it)."""
    method = str(quant.get("quant_method", "")).lower()
    out: dict[str, Any] = {"method": method or "unknown", "quantize": None}
    if method == "bitsandbytes" or quant.get("load_in_4bit") or quant.get("load_in_8bit"):
        out["method"] = "bitsandbytes"
        if quant.get("load_in_4bit"):
            kind = str(quant.get("bnb_4bit_quant_type", "fp4")).lower()
            # nf4 with double quantisation is QLoRA's layout (memlens.formats); plain fp4 int4
            out["bits"], out["quantize"] = 4, "nf4" if kind == "nf4" else "int4"
            compute = str(quant.get("bnb_4bit_compute_dtype", "float32")).removeprefix("torch.")
            out["compute_dtype"] = _BNB_COMPUTE.get(compute, "fp32")
        elif quant.get("load_in_8bit"):
            out["bits"], out["quantize"] = 8, "int8"
    elif method in ("gptq", "awq"):
        out["bits"] = quant.get("bits", quant.get("w_bit"))
        out["group_size"] = quant.get("group_size", quant.get("q_group_size"))
    elif "fp8" in method:
        out["bits"] = 8
        if quant.get("weight_block_size"):
            out["block"] = quant["weight_block_size"]
    return out


def describe_quantization(q: Mapping[str, Any]) -> str:
    """``gptq 4-bit, group 128``: a ``quantization_config`` in words."""
    parts = [q["method"]]
    if q.get("bits"):
        parts[0] += f" {q['bits']}-bit"
    if q.get("group_size"):
        parts.append(f"group {q['group_size']}")
    if q.get("quantize") in ("nf4", "int4") and q["method"] == "bitsandbytes":
        parts.append(q["quantize"])
    if q.get("compute_dtype"):
        parts.append(f"compute {q['compute_dtype']}")
    return ", ".join(parts)


def check_config(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse a config without a ``model_type`` or with a size that is not an integer."""
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            f"{where}: field 'model_type' is missing or not a string "
            '(a transformers config.json names its architecture, e.g. "llama")'
        )
    _check_sizes(cfg, where, prefix="")


def _check_sizes(cfg: Mapping[str, Any], where: str, prefix: str) -> None:
    for key, value in cfg.items():
        if isinstance(value, dict) and key.endswith("_config"):
            _check_sizes(value, where, prefix=f"{prefix}{key}.")
        elif key in _INT_FIELDS or key in _INT_OR_LIST_FIELDS:
            values = value if key in _INT_OR_LIST_FIELDS and isinstance(value, list) else [value]
            if value is None or all(_positive_int(v) for v in values):
                continue
            raise ConfigError(
                f"{where}: field '{prefix}{key}' must be a positive integer, got {value!r}"
            )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# --- tasks and modalities -------------------------------------------------------------------


def _real_ints(high: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random integers below ``high`` from a fixed seed, real even under the engine's fake
    mode: the trace knows their values (as a user's own inputs), so the model's reads of them
    (transformers' ``warn_if_padding_and_no_attention_mask``) are answered, not explored,
    and the real run reads the same ones."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        generator = torch.Generator().manual_seed(0)
        ints = torch.randint(0, high, shape, generator=generator)
        return ints.to(torch.get_default_device())


def _tokens(config: Any, batch: int, seq_len: int) -> torch.Tensor:
    return _real_ints(config.get_text_config().vocab_size, (batch, seq_len))


def _noise(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    return torch.randn(batch, *shape)


@dataclass(frozen=True)
class Task:
    """A head: the auto classes that build it, the ``architectures`` suffixes that name it,
    its :class:`ModelSpec` family on text, and its training labels (``None``: no loss of its
    own) from the config, the inputs made so far, the batch and the step's sizes."""

    auto_classes: tuple[str, ...]  # tried in order
    suffixes: tuple[str, ...]
    family: str
    labels: Callable[[Any, dict[str, Any], int, dict[str, Any]], torch.Tensor] | None
    decoder_inputs: bool = False  # an encoder-decoder model gets decoder tokens
    encoder_decoder: bool | None = None  # the configs its suffixes name it for (None: any)


def _class_labels(
    config: Any, inputs: dict[str, Any], batch: int, sizes: dict[str, Any]
) -> torch.Tensor:
    return _real_ints(config.num_labels, (batch,))


_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")

#: Every task, as ``--task`` names it (:data:`memlens.workload.TASKS`).
TASKS_TABLE: dict[str, Task] = {
    "causal-lm": Task(
        ("AutoModelForCausalLM",),
        _LM_SUFFIXES,
        "causal-lm",
        lambda config, inputs, batch, sizes: inputs["input_ids"],  # the model shifts them
        encoder_decoder=False,
    ),
    "masked-lm": Task(
        ("AutoModelForMaskedLM",),
        ("ForMaskedLM",),
        "masked-lm",
        lambda config, inputs, batch, sizes: _tokens(config, *inputs["input_ids"].shape),
    ),
    "seq2seq": Task(
        ("AutoModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq"),
        _LM_SUFFIXES,  # of an encoder-decoder config
        "seq2seq",
        # decoder tokens, which the model shifts into its decoder inputs
        lambda config, inputs, batch, sizes: _tokens(config, batch, sizes["seq_len"]),
        decoder_inputs=True,
        encoder_decoder=True,
    ),
    "seq-cls": Task(
        ("AutoModelForSequenceClassification",),
        ("ForSequenceClassification",),
        "encoder",
        _class_labels,
    ),
    "image-cls": Task(
        ("AutoModelForImageClassification",),
        ("ForImageClassification",),
        "vision",
        _class_labels,
    ),
    "base": Task(("AutoModel",), (), "encoder", None, decoder_inputs=True),
}


def default_task(cfg: Mapping[str, Any]) -> str:
    """The task of the config's ``architectures`` class, from its name (``base`` if unknown);
    a language-model head of an encoder-decoder config is ``seq2seq``."""
    arch = (cfg.get("architectures") or [""])[0] or ""
    encoder_decoder = bool(cfg.get("is_encoder_decoder"))
    for name, task in TASKS_TABLE.items():
        if arch.endswith(task.suffixes) and task.encoder_decoder in (None, encoder_decoder):
            return name
    return "base"


@dataclass(frozen=True)
class Modality:
    """What a model reads: whether a config is of it, the inputs it is fed (in order), the
    default per-sample shape of its non-token input and its default tokens per sample (None:
    it has none), and its :class:`ModelSpec` family whatever the head (None: the task's)."""

    detect: Callable[[Mapping[str, Any], str], bool]  # (config dict, task)
    inputs: tuple[str, ...]
    sample_shape: Callable[[Any], tuple[int, ...]] | None
    seq_len: Callable[[Any], int] | None
    family: str | None


def _audio_shape(config: Any) -> tuple[int, ...]:
    return config.num_mel_bins, _AUDIO_FRAMES_PER_POSITION * config.max_source_positions


def _image_shape(vision: Any) -> tuple[int, ...]:
    size = vision.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return getattr(vision, "num_channels", 3), h, w


def _dual_encoder(cfg: Mapping[str, Any], task: str) -> bool:
    both = isinstance(cfg.get("text_config"), dict) and isinstance(cfg.get("vision_config"), dict)
    return both and task == "base"


def _text_len(config: Any) -> int:
    return default_seq_len(config.get_text_config())


#: Every modality, in the order a config is tested against them (text is the rest).
MODALITIES: dict[str, Modality] = {
    "audio": Modality(
        lambda cfg, task: "num_mel_bins" in cfg,
        ("input_features",),
        _audio_shape,
        lambda config: config.max_target_positions,
        "audio",
    ),
    "image": Modality(
        lambda cfg, task: "image_size" in cfg and "vocab_size" not in cfg,
        ("pixel_values",),
        _image_shape,
        None,
        "vision",
    ),
    "text+image": Modality(
        _dual_encoder,
        ("pixel_values", "input_ids"),
        lambda config: _image_shape(config.vision_config),
        _text_len,
        None,
    ),
    "text": Modality(lambda cfg, task: True, ("input_ids",), None, _text_len, None),
}

#: How each input is made from the config, the batch and the step's sizes.
_INPUTS: dict[str, Callable[[Any, int, dict[str, Any]], torch.Tensor]] = {
    "input_ids": lambda config, b, sizes: _tokens(config, b, sizes["seq_len"]),
    "pixel_values": lambda config, b, sizes: _noise(b, sizes["input_shape"]),
    "input_features": lambda config, b, sizes: _noise(b, sizes["input_shape"]),
}


def modality(cfg: Mapping[str, Any], task: str) -> str:
    """What the model reads (a key of :data:`MODALITIES`)."""
    return next(name for name, m in MODALITIES.items() if m.detect(cfg, task))


def family(task: str, kind: str, encoder_decoder: bool = False) -> str:
    """The :class:`ModelSpec` family of a head on inputs of ``kind``."""
    reads = MODALITIES[kind].family
    if reads is not None:
        return reads
    if encoder_decoder:
        return "seq2seq"
    return TASKS_TABLE[task].family


# --- building -------------------------------------------------------------------------------


def _make_config(cfg: dict[str, Any], where: str, source: str | None, trust_remote_code: bool):
    tf = _transformers()
    model_type = cfg["model_type"]
    if model_type in tf.CONFIG_MAPPING:
        try:
            return tf.CONFIG_MAPPING[model_type].from_dict(cfg)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ConfigError(f"{where}: {type(e).__name__}: {e}") from e
    if "auto_map" not in cfg:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is unknown to transformers "
            f"{tf.__version__} (a newer transformers may know it)"
        )
    if not trust_remote_code:
        raise ConfigError(
            f"{where}: model_type {model_type!r} runs the model's own code from its "
            "repository; pass --trust-remote-code (trust_remote_code=True) to allow it"
        )
    if source is None:
        raise ConfigError(f"{where}: remote code needs the repository or folder of the config")
    try:
        return tf.AutoConfig.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: loading its remote code failed: {e}") from e


def _head(config: Any, arch: str | None, task: str, trust_remote_code: bool, where: str):
    """A function that builds the model from a config (its class is looked up now)."""
    import torch

    tf = _transformers()
    # transformers 4.56 renamed ``torch_dtype`` to ``dtype`` (the old name still works, with a
    # deprecation warning); older releases reject ``dtype``.
    dtype_kw = "dtype" if _version_tuple(tf.__version__) >= (4, 56) else "torch_dtype"
    dtype = {dtype_kw: torch.float32}
    try:
        arch_cls = getattr(tf, arch) if arch else None
    except (AttributeError, ImportError):
        arch_cls = None
    if isinstance(arch_cls, type) and issubclass(arch_cls, tf.PreTrainedModel):
        return lambda c, **kw: arch_cls._from_config(c, **dtype, **kw)
    remote = getattr(config, "auto_map", None) or {}
    for name in TASKS_TABLE[task].auto_classes:
        auto = getattr(tf, name)
        if type(config) in auto._model_mapping or (trust_remote_code and name in remote):
            return lambda c, auto=auto, **kw: auto.from_config(
                c, trust_remote_code=trust_remote_code, **dtype, **kw
            )
    raise ConfigError(
        f"{where}: transformers has no {task} model for model_type {config.model_type!r}; "
        f"choose another task ({', '.join(TASKS)})"
    )


#: ``attention`` option -> ``attn_implementation`` (``auto``: the config's, else transformers').
_ATTN_IMPLEMENTATIONS = {"eager": "eager", "sdpa": "sdpa", "flash": "sdpa", "mem-efficient": "sdpa"}


def attn_implementation(cfg: Mapping[str, Any], attention: str = "auto") -> str | None:
    """The ``attn_implementation`` to build with (None: transformers' default).

    The config's own choice is honoured under ``auto``; ``flash_attention_2``/``_3`` (the
    ``flash-attn`` package's kernels, not installed with memlens) are built as ``sdpa``,
    which the engine routes to PyTorch's flash kernel where CUDA can run it: the same
    algorithm, whose saved tensors are the output and a log-sum-exp."""
    if attention != "auto":
        return _ATTN_IMPLEMENTATIONS[attention]
    own = cfg.get("attn_implementation") or cfg.get("_attn_implementation")
    if isinstance(own, str) and own.startswith("flash_attention"):
        return "sdpa"
    return own if isinstance(own, str) else None


def spec_from_config(
    cfg: dict[str, Any],
    *,
    name: str,
    source: str,
    where: str,
    task: str | None = None,
    trust_remote_code: bool = False,
    remote_source: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelSpec:
    """A :class:`ModelSpec` for the transformers model that ``cfg`` (a config.json) describes.

    ``task`` picks the head (default: the config's ``architectures``); ``remote_source`` is
    the Hub id or folder that a ``trust_remote_code`` config loads its code from.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    check_config(cfg, where)
    full_cfg = dict(cfg)  # from_dict sets the dict's attn_implementation to None
    config = _make_config(cfg, where, remote_source, trust_remote_code)
    full = config.to_dict()
    chosen = task or default_task(full)
    kind = modality(full, chosen)
    arch = None if task else (full.get("architectures") or [None])[0]
    instantiate = _head(config, arch, chosen, trust_remote_code, where)

    def build() -> nn.Module:
        from torch._guards import detect_fake_mode

        c = copy.deepcopy(config)
        workload = build_workload()
        attn = attn_implementation(full_cfg, workload.attention if workload else "auto")
        kwargs = {"attn_implementation": attn} if attn is not None else {}
        if hasattr(c, "use_cache") and workload is not None and workload.use_cache is not None:
            c.use_cache = workload.use_cache
        if chosen == "seq-cls" and getattr(c, "pad_token_id", None) is None:
            c.pad_token_id = 0  # lets a decoder find each row's last token at batch > 1
        if detect_fake_mode() is None:
            return instantiate(c, **kwargs)  # a real build (measurement) keeps its init
        # Fake values never matter: skip transformers' initialisation, 2.5x faster at 405B.
        # It skips weight tying too, redone here.
        with _transformers().modeling_utils.no_init_weights():
            model = instantiate(c, **kwargs)
        model.tie_weights()
        return model

    meta = {"task": chosen, "model_type": cfg["model_type"], "config": where}
    meta["checkpoint"] = checkpoint_settings(full_cfg)
    meta.update(
        {k: list(v) if isinstance(v, tuple) else v for k, v in _sizes(config, kind).items()}
    )
    meta.update(metadata or {})
    return ModelSpec(
        name=name,
        build=build,
        make_inputs=_inputs(chosen, kind),
        family=family(chosen, kind, bool(full.get("is_encoder_decoder"))),
        source=source,
        loss_kind="mean" if chosen == "base" else "model",
        metadata=meta,
    )


# --- inputs ---------------------------------------------------------------------------------


def default_seq_len(config: Any) -> int:
    """512 tokens, or the model's maximum if shorter."""
    for key in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, key, None)
        if isinstance(limit, int) and limit > 0:
            return min(limit, DEFAULT_SEQ_LEN)
    return DEFAULT_SEQ_LEN


def _sizes(
    config: Any, kind: str, seq_len: int | None = None, input_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """The step's per-sample ``input_shape`` and ``seq_len`` for what the modality reads: the
    workload's, else the modality's defaults."""
    reads = MODALITIES[kind]
    if input_shape is not None and reads.sample_shape is None:
        raise WorkloadError(
            "input_shape",
            "x".join(map(str, input_shape)),
            f"does not apply to this {kind} model (its inputs are token ids): set their "
            "length with seq_len",
        )
    if seq_len is not None and reads.seq_len is None:
        raise WorkloadError(
            "seq_len",
            seq_len,
            f"does not apply to this {kind} model (it reads no tokens): set its input size "
            "with input_shape",
        )
    out: dict[str, Any] = {}
    if reads.sample_shape is not None:
        out["input_shape"] = tuple(input_shape or reads.sample_shape(config))
    if reads.seq_len is not None:
        out["seq_len"] = seq_len or reads.seq_len(config)
    return out


def _check_positions(config: Any, workload: Workload) -> None:
    """Refuse a ``seq_len`` past the model's positions (a real run fails, or runs where the
    model was never trained), unless ``allow_long_context`` (RoPE models extrapolate)."""
    seq = workload.seq_len
    found = checkpoint_settings(config.to_dict()).get("max_positions")
    if seq is None or found is None or workload.allow_long_context:
        return
    limit, key = found
    if seq > limit:
        raise WorkloadError(
            "seq_len",
            seq,
            f"past the model's {limit} positions ({key} in its config): a real run fails or "
            "leaves what the model was trained for; allow_long_context for a model that "
            "extrapolates (RoPE scaling)",
        )


def _inputs(task_name: str, kind: str) -> Callable[[nn.Module, Workload], Inputs]:
    """``make_inputs`` for a head on inputs of ``kind`` (see the module docstring)."""
    task, reads = TASKS_TABLE[task_name], MODALITIES[kind]

    def make(model: nn.Module, workload: Workload) -> Inputs:
        config, b = model.config, workload.batch
        _check_positions(config, workload)
        sizes = _sizes(config, kind, workload.seq_len, workload.input_shape)
        kwargs: dict[str, Any] = {name: _INPUTS[name](config, b, sizes) for name in reads.inputs}
        if workload.training and task.labels is not None:
            kwargs["labels"] = task.labels(config, kwargs, b, sizes)
        elif task.decoder_inputs and getattr(config, "is_encoder_decoder", False):
            kwargs["decoder_input_ids"] = _tokens(config, b, sizes["seq_len"])
        return Inputs(kwargs=kwargs)

    return make


# --- sources: a path, a Hub id --------------------------------------------------------------


def resolve_path(
    text: str, *, task: str | None = None, trust_remote_code: bool = False
) -> ModelSpec | None:
    """A spec from a ``config.json``, a folder holding one, or a Hub id; None if ``text`` is
    none of these (another source may know it)."""
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    options: dict[str, Any] = {"task": task, "trust_remote_code": trust_remote_code}
    if path.is_file() and path.suffix == ".json" and not path.name.endswith(".index.json"):
        name = path.parent.resolve().name if path.name == "config.json" else path.stem
        cfg = read_config(path)
        spec = spec_from_config(
            cfg, name=name, source="hf", where=str(path), remote_source=str(path.parent), **options
        )
        found = spec.metadata["checkpoint"]
        if "precision" not in found and "quantization" not in found:
            stored = _stored_precision(path.parent)
            if stored is not None:
                found["precision"] = stored
        return spec
    if path.exists() or not _HUB_ID.match(text) or text.lower().startswith("timm/"):
        return None  # not a Hub id (timm's Hub ids are timm's)
    cfg = read_config(_hub_config(text))
    return spec_from_config(
        cfg,
        name=text,
        source="hf",
        where=f"{text} config.json",
        remote_source=text,
        metadata={"hub_id": text},
        **options,
    )


#: safetensors dtype names -> precisions.
_STORED = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def _stored_precision(folder: Path) -> tuple[str, str] | None:
    """The precision of most of the weights' bytes in the folder's safetensors headers (only
    headers are read), for a config that names no ``torch_dtype``; None without such files."""
    from memlens._errors import HeaderError
    from memlens.sources.safetensors_header import read_folder

    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        return None
    try:
        summary = read_folder(folder)
    except HeaderError:
        return None
    top = next(iter(summary.by_dtype), None)
    return (_STORED[top], f"safetensors header ({top} weights)") if top in _STORED else None


def _hub_config(repo_id: str) -> Path:
    """The Hub repository's ``config.json``: from the local cache, else downloaded alone."""
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError as e:
        raise MissingExtraError("huggingface-hub", "hf", f"fetching {repo_id}'s config") from e
    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except ValueError as e:  # HFValidationError
        raise ConfigError(f"{repo_id!r} is not a valid Hub id: {e}") from e
    if isinstance(cached, str):
        return Path(cached)
    hint = _offline_hint(repo_id)
    if constants.HF_HUB_OFFLINE or not _hub_reachable(constants.ENDPOINT):
        raise ConfigError(
            f"{repo_id}: not bundled, its config.json is not in the Hugging Face cache, "
            f"and the Hub cannot be reached (offline){hint}"
        )
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, "config.json"))
    except errors.GatedRepoError as e:
        raise ConfigError(f"{repo_id} is gated: log in (hf auth login){hint}") from e
    except errors.RepositoryNotFoundError as e:
        raise ConfigError(f"{repo_id}: no such Hub repository (or it is private){hint}") from e
    except errors.LocalEntryNotFoundError as e:  # the download failed on the way
        raise ConfigError(f"{repo_id}: the Hub cannot be reached{hint}") from e
    except errors.EntryNotFoundError as e:
        raise ConfigError(f"{repo_id} has no config.json: not a transformers model?") from e
    except (OSError, ValueError, errors.HfHubHTTPError) as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise ConfigError(f"{repo_id}: downloading config.json failed ({reason}){hint}") from e


def _offline_hint(repo_id: str) -> str:
    from memlens.sources import registry  # imports this module

    close = registry.suggest(repo_id, n=3)
    found = f"did you mean {', '.join(repr(c) for c in close)}? Or " if close else ""
    return f"; {found}pass a local config.json"


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens (skipped behind a proxy: assume yes)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def names() -> dict[str, dict[str, Any]]:
    """No fixed names: Hugging Face models are named by path or Hub id."""
    return {}


def resolve(name: str) -> ModelSpec | None:
    """Names are :mod:`memlens.sources.bundled`'s; this source only resolves paths."""
    return None
