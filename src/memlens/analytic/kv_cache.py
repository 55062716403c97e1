"""The KV cache in closed form, from a Hugging Face ``config.json`` (torch-free).

:func:`kv_cache` reads a config into a :class:`KVCache`: one :class:`CacheLayer` per decoder
layer that keeps keys and values, with the elements it stores per token (all its KV heads) and
how many tokens it keeps. Its byte counts are exact integers for a *runtime*, since runtimes
lay the same model's cache out differently:

``transformers`` (``transformers/cache_utils.py``, 4.57)
    - MHA, GQA, MQA: ``DynamicLayer`` keeps ``[batch, kv_heads, tokens, head_dim]`` for keys
      and for values; ``head_dim`` is the config's, else ``hidden_size // heads``.
    - Sliding window: ``DynamicCache(config=...)`` makes a ``DynamicSlidingWindowLayer`` for
      each ``sliding_attention`` (or ``chunked_attention``) layer of ``config.layer_types``
      (no ``layer_types``: every layer when ``sliding_window`` or ``attention_chunk_size`` is
      set); it keeps the last ``sliding_window - 1`` tokens (``update``:
      ``full_key_states[:, :, -self.sliding_window + 1 :, :]``). ``StaticSlidingWindowLayer``
      keeps ``min(sliding_window, max_cache_len)`` (``static=True``). Layer patterns are the
      config classes' own: Gemma-2 alternates sliding/full, Gemma-3 slides where ``(i + 1) %
      sliding_window_pattern`` (6), Qwen-2 slides from ``max_window_layers`` when
      ``use_sliding_window``.
    - Multi-head latent attention (DeepSeek-V2/V3): ``DeepseekV2Attention.forward``
      decompresses before ``past_key_values.update``: keys of ``heads x (qk_nope_head_dim +
      qk_rope_head_dim)`` and values of ``heads x v_head_dim`` per token (the flash-attention
      padding of the values comes after the update, so it is not cached).
    - Cross-attention (encoder-decoder, Whisper): ``EncoderDecoderCache.cross_attention_cache``
      keeps each decoder layer's keys and values of the encoder output, ``encoder_len`` tokens
      (Whisper: ``max_source_positions``, 1500 frames for 30 s of audio).
    - ``int4`` and ``int8`` are ``QuantizedCache`` (KIVI-style): ``int4`` its default backend
      (quanto, ``QuantoQuantizedLayer``, ``nbits=4``), ``int8`` the HQQ backend (``nbits=8``;
      quanto takes 2 or 4 bits only). Each key and value tensor is quantised in groups of
      ``q_group_size = 64`` elements, each group with a scale and a zero point (quanto's
      ``MaxOptimizer.optimize`` returns ``scale`` and ``shift = -rmin`` in the input's dtype;
      HQQ's ``meta['scale']``, ``meta['zero']`` are cast to ``compute_dtype``), the payload
      packed into ``uint8``. The newest tokens wait unquantised in a residual buffer:
      ``QuantizedLayer.update`` quantises the whole prefill, then appends each decoded token
      to the residual and re-quantises everything when the residual reaches
      ``residual_length = 128``; so after ``k`` decoded tokens ``k % 128`` tokens per layer
      are held in the compute dtype (:meth:`KVCache.sequence_bytes` with ``prompt_len``).
      ``QuantizedLayer`` has no sliding window: every layer keeps every token.

``vllm`` (paged; ``vllm/config/model.py`` ``ModelConfig.get_num_kv_heads`` and
``get_head_size``, ``vllm/v1/kv_cache_interface.py``)
    - KV heads per GPU are ``max(1, kv_heads // tp)``: with more GPUs than KV heads each head
      is replicated (``get_num_kv_heads``).
    - MLA caches the compressed latent and the rope key, one "head" of ``kv_lora_rank +
      qk_rope_head_dim`` elements per token and layer, the same on every TP rank
      (``get_head_size`` with ``use_mla``; ``MLAAttentionSpec.page_size_bytes`` has no factor
      2 for a separate value). DeepSeek-V2-Lite: ``(512 + 64) x 27`` layers ``x 2 B`` =
      31,104 B per token in bf16.
    - ``fp8`` (``--kv-cache-dtype fp8``, e4m3) stores one byte per element; its scales are
      two fp32 scalars per attention layer (``Attention._k_scale``, ``_v_scale``), counted in
      :attr:`KVCache.constant_bytes`. vLLM has no int8 or int4 KV cache: they are refused.
    - Sliding-window layers keep at most ``sliding_window - 1 + max_num_batched_tokens``
      tokens of a request (``SlidingWindowSpec.max_memory_usage_bytes``; used by
      :mod:`memlens.plan.serve`); here, :meth:`KVCache.sequence_bytes` counts ``sliding_window``
      tokens for them.

A model without a decoder cache (BERT, ViT, CLIP) raises :class:`~memlens.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from memlens._errors import ConfigError, WorkloadError

#: The ``kv_dtype`` choices: ``auto`` is the model's compute dtype.
KV_DTYPES = ("auto", "bf16", "fp16", "fp32", "fp8", "int8", "int4")
#: Runtimes whose cache layout is modelled.
RUNTIMES = ("transformers", "vllm")
#: Bytes of an element of each unquantised KV dtype.
_ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
#: transformers ``QuantizedCache`` defaults (``cache_utils.py``): group size, residual length.
Q_GROUP_SIZE = 64
RESIDUAL_LENGTH = 128
#: Payload bits of the quantised caches: quanto int4, HQQ int8.
_Q_BITS = {"int4": 4, "int8": 8}
#: ``torch_dtype`` spellings of a config.
_TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "half": "fp16"}


@dataclass(frozen=True)
class CacheLayer:
    """One attention layer's cache: elements per token (all KV heads on one GPU) of its
    keys and of its values, and the tokens it keeps (``window``; None: every token)."""

    index: int
    kind: str  # "full" | "sliding" | "mla" | "cross"
    kv_heads: int
    key_elems: int
    value_elems: int
    window: int | None = None

    def tokens(self, seq_len: int, encoder_len: int) -> int:
        """Tokens this layer holds when the sequence is ``seq_len`` long."""
        if self.kind == "cross":
            return encoder_len
        return seq_len if self.window is None else min(seq_len, self.window)


@dataclass(frozen=True)
class KVCache:
    """A model's KV cache on one GPU, for one runtime and KV dtype (see the module doc)."""

    model_type: str
    runtime: str
    kv_dtype: str  # resolved: fp32 | bf16 | fp16 | fp8 | int8 | int4
    compute_dtype: str  # the model's activations (the residual and scales of int8/int4)
    layers: tuple[CacheLayer, ...]
    tp: int = 1
    encoder_len: int = 0  # cross-attention tokens (encoder-decoder models)
    notes: tuple[str, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.kv_dtype in _Q_BITS

    @property
    def self_layers(self) -> tuple[CacheLayer, ...]:
        return tuple(la for la in self.layers if la.kind != "cross")

    @property
    def cross_layers(self) -> tuple[CacheLayer, ...]:
        return tuple(la for la in self.layers if la.kind == "cross")

    @property
    def constant_bytes(self) -> int:
        """Bytes kept whatever the length: vLLM fp8's two fp32 scales per layer."""
        if self.runtime == "vllm" and self.kv_dtype == "fp8":
            return 2 * 4 * len(self.self_layers)
        return 0

    def tensor_bytes(self, elements: int) -> int:
        """Bytes of one key or value tensor of ``elements`` elements, metadata included."""
        if elements == 0:
            return 0
        if not self.quantized:
            return elements * _ELEMENT_BYTES[self.kv_dtype]
        payload = math.ceil(elements * _Q_BITS[self.kv_dtype] / 8)
        groups = math.ceil(elements / Q_GROUP_SIZE)
        return payload + 2 * groups * _ELEMENT_BYTES[self.compute_dtype]  # scale + zero point

    def layer_bytes(self, layer: CacheLayer, tokens: int, batch: int = 1) -> int:
        """Bytes of ``layer`` holding ``tokens`` tokens of ``batch`` sequences."""
        n = batch * tokens
        return self.tensor_bytes(n * layer.key_elems) + self.tensor_bytes(n * layer.value_elems)

    def bytes_per_token(self) -> int:
        """Bytes one more token adds to the self-attention cache, every layer keeping it
        (below any sliding window; quantised caches: exact when a group holds whole tokens,
        the per-element cost otherwise rounded up)."""
        return sum(self.layer_bytes(la, 1) for la in self.self_layers)

    def sequence_bytes(
        self,
        seq_len: int,
        batch: int = 1,
        *,
        prompt_len: int | None = None,
        static: bool = False,
    ) -> int:
        """Cache bytes of ``batch`` sequences at ``seq_len`` tokens, cross-attention included.

        ``static``: transformers' ``StaticCache`` windows (``sliding_window`` tokens, not
        ``sliding_window - 1``). Quantised caches: with ``prompt_len``, the ``(seq_len -
        prompt_len) % residual_length`` newest tokens are in the residual buffer in the
        compute dtype; without it, none (the state right after a re-quantisation).
        """
        if seq_len < 0 or batch < 1:
            raise ConfigError(f"seq_len must be >= 0 and batch >= 1, got {seq_len}, {batch}")
        total = self.constant_bytes
        for la in self.layers:
            tokens = la.tokens(seq_len, self.encoder_len)
            if static and la.kind == "sliding" and la.window is not None:
                tokens = min(seq_len, la.window + 1)
            if self.quantized and la.kind != "cross":
                residual = 0
                if prompt_len is not None:
                    if not 0 <= prompt_len <= seq_len:
                        raise ConfigError(f"prompt_len {prompt_len} must be <= seq_len {seq_len}")
                    residual = (seq_len - prompt_len) % RESIDUAL_LENGTH
                quantized = self.layer_bytes(la, tokens - residual, batch)
                plain = replace_dtype(self, self.compute_dtype).layer_bytes(la, residual, batch)
                total += quantized + plain
            else:
                total += self.layer_bytes(la, tokens, batch)
        return total


def replace_dtype(cache: KVCache, kv_dtype: str) -> KVCache:
    """``cache`` with another resolved KV dtype."""
    return replace(cache, kv_dtype=kv_dtype)


def config_dtype(config: Mapping[str, Any]) -> str | None:
    """The config's ``torch_dtype`` (or ``dtype``) as ``bf16``/``fp16``/``fp32``, if given."""
    value = config.get("torch_dtype") or config.get("dtype")
    return _TORCH_DTYPES.get(str(value).removeprefix("torch.")) if value else None


def kv_cache(
    config: Mapping[str, Any],
    *,
    kv_dtype: str = "auto",
    dtype: str | None = None,
    runtime: str = "transformers",
    tp: int = 1,
    encoder_len: int | None = None,
) -> KVCache:
    """The KV cache layout of the model of ``config`` (a ``config.json`` as a dict).

    ``dtype`` is the compute dtype (default: the config's ``torch_dtype``, else fp32 with a
    note); ``kv_dtype`` one of :data:`KV_DTYPES` (``auto``: ``dtype``); ``tp`` the
    tensor-parallel degree (vLLM only); ``encoder_len`` the encoder's output length of an
    encoder-decoder model (default: Whisper's ``max_source_positions``; otherwise required).
    """
    if runtime not in RUNTIMES:
        raise WorkloadError("runtime", runtime, "allowed: " + ", ".join(RUNTIMES))
    if kv_dtype not in KV_DTYPES:
        raise WorkloadError("kv_dtype", kv_dtype, "allowed: " + ", ".join(KV_DTYPES))
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise WorkloadError("tp", tp, "must be a positive integer")
    if tp > 1 and runtime != "vllm":
        raise WorkloadError("tp", tp, "tensor parallelism is modelled for the vllm runtime")
    notes: list[str] = []
    cfg = _decoder_config(config)
    if dtype is None:
        dtype = config_dtype(config) or config_dtype(cfg)
        if dtype is None:
            dtype = "fp32"
            notes.append("compute dtype: the config names none; fp32 assumed")
    if dtype not in ("fp32", "bf16", "fp16"):
        raise WorkloadError("dtype", dtype, "allowed: fp32, bf16, fp16")
    resolved = dtype if kv_dtype == "auto" else kv_dtype
    if runtime == "vllm" and resolved in _Q_BITS:
        raise WorkloadError(
            "kv_dtype",
            kv_dtype,
            "vLLM caches in the model dtype or fp8; int8/int4 are "
            "transformers' QuantizedCache (runtime='transformers')",
        )
    if runtime == "transformers" and resolved == "fp8":
        raise WorkloadError(
            "kv_dtype", kv_dtype, "transformers has no fp8 KV cache; vLLM does (runtime='vllm')"
        )
    model_type = str(config.get("model_type", ""))
    layers = _self_layers(cfg, model_type, runtime, tp, quantized=resolved in _Q_BITS)
    enc = 0
    if config.get("is_encoder_decoder"):
        if resolved in _Q_BITS:
            raise WorkloadError(
                "kv_dtype",
                kv_dtype,
                "a quantised cache of an encoder-decoder model is not modelled",
            )
        enc = _encoder_len(config, encoder_len)
        heads, head_dim = _heads(cfg)
        kv = heads  # cross-attention has as many KV heads as queries in every bundled model
        per_gpu = _per_gpu(kv, tp) if runtime == "vllm" else kv
        layers += tuple(
            CacheLayer(la.index, "cross", per_gpu, per_gpu * head_dim, per_gpu * head_dim)
            for la in layers
        )
    elif encoder_len is not None:
        raise WorkloadError("encoder_len", encoder_len, "applies to encoder-decoder models only")
    return KVCache(
        model_type=model_type,
        runtime=runtime,
        kv_dtype=resolved,
        compute_dtype=dtype,
        layers=layers,
        tp=tp,
        encoder_len=enc,
        notes=tuple(notes),
    )


# -- reading the config -----------------------------------------------------------------------


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _int(cfg: Mapping[str, Any], what: str, *keys: str) -> int:
    value = _first(cfg, *keys)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config has no {what} ({' / '.join(keys)}): {value!r}")
    return value


def _decoder_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The text decoder's part of a config (``text_config`` of multimodal models)."""
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _heads(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """(query heads, head dim) of the decoder's attention."""
    heads = _int(
        cfg,
        "attention heads",
        "decoder_attention_heads",
        "num_attention_heads",
        "n_head",
        "num_heads",
    )
    head_dim = _first(cfg, "head_dim", "d_kv")
    if head_dim is None:
        hidden = _int(cfg, "hidden size", "hidden_size", "n_embd", "d_model")
        if hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not a multiple of {heads} heads")
        head_dim = hidden // heads
    return heads, int(head_dim)


def _kv_heads(cfg: Mapping[str, Any], heads: int) -> int:
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
        return 1  # Falcon-7B, GPTBigCode
    kv = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    return heads if kv is None else int(kv)


def _per_gpu(kv_heads: int, tp: int) -> int:
    """vLLM ``ModelConfig.get_num_kv_heads``: ``max(1, total // tp)``."""
    return max(1, kv_heads // tp)


def _layer_types(cfg: Mapping[str, Any], model_type: str, n: int) -> tuple[list[str], int | None]:
    """Each layer's attention type and the sliding window, as the config class sets them."""
    window = _first(cfg, "sliding_window", "attention_chunk_size")
    if model_type.startswith(("qwen2", "qwen3")) and not cfg.get("use_sliding_window"):
        window = None  # Qwen2Config: sliding_window if use_sliding_window else None
    types = cfg.get("layer_types")
    if types is None:
        if model_type == "gemma2":
            types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
        elif model_type in ("gemma3", "gemma3_text"):
            pattern = int(cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6)))
            types = [
                "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)
            ]
        elif model_type.startswith(("qwen2", "qwen3")) and "moe" not in model_type and window:
            # Qwen2Config/Qwen3Config slide from max_window_layers; the MoE configs set no
            # layer_types, so DynamicCache slides every layer
            first = int(cfg.get("max_window_layers", n))
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(n)]
        else:
            kind = "sliding_attention" if window is not None else "full_attention"
            types = [kind] * n
    if model_type in ("gemma3", "gemma3_text") and cfg.get("use_bidirectional_attention"):
        window = window // 2 + 1 if window else window  # Gemma3TextConfig
    shared = cfg.get("num_kv_shared_layers")
    types = list(types)[: n - int(shared)] if shared else list(types)[:n]
    if len(types) != n - (int(shared) if shared else 0):
        raise ConfigError(f"layer_types lists {len(types)} layers for {n}")
    return types, (int(window) if window else None)


def _self_layers(
    cfg: Mapping[str, Any], model_type: str, runtime: str, tp: int, *, quantized: bool
) -> tuple[CacheLayer, ...]:
    if cfg.get("is_encoder_decoder"):
        n = _int(cfg, "decoder layers", "decoder_layers", "num_decoder_layers", "num_layers")
    else:
        arch = " ".join(cfg.get("architectures") or ())
        if model_type in (
            "bert",
            "roberta",
            "vit",
            "clip",
            "clip_text_model",
            "clip_vision_model",
            "deberta",
            "distilbert",
        ) or (arch and not any(k in arch for k in ("CausalLM", "LMHead", "Generation"))):
            raise ConfigError(
                f"{model_type or arch}: no generation head (an encoder or a classifier): "
                "no KV cache"
            )
        n = _int(cfg, "layers", "num_hidden_layers", "n_layer", "num_layers")
    if cfg.get("kv_lora_rank"):
        return _mla_layers(cfg, n, runtime)
    heads, head_dim = _heads(cfg)
    kv = _kv_heads(cfg, heads)
    if runtime == "vllm":
        kv = _per_gpu(kv, tp)
    types, window = _layer_types(cfg, model_type, n)
    layers = []
    for i, t in enumerate(types):
        sliding = t in ("sliding_attention", "chunked_attention") and window is not None
        if sliding and quantized:
            sliding = False  # QuantizedLayer has no window
        keep = None
        if sliding:
            keep = window - 1 if runtime == "transformers" else window
        kind = "sliding" if sliding else "full"
        layers.append(CacheLayer(i, kind, kv, kv * head_dim, kv * head_dim, keep))
    return tuple(layers)


def _mla_layers(cfg: Mapping[str, Any], n: int, runtime: str) -> tuple[CacheLayer, ...]:
    """DeepSeek-V2/V3 multi-head latent attention (see the module docstring)."""
    rope = _int(cfg, "rope head dim", "qk_rope_head_dim")
    if runtime == "vllm":
        latent = _int(cfg, "kv_lora_rank", "kv_lora_rank")
        return tuple(CacheLayer(i, "mla", 1, latent + rope, 0) for i in range(n))
    heads = _int(cfg, "attention heads", "num_attention_heads")
    nope = _int(cfg, "nope head dim", "qk_nope_head_dim")
    v = _int(cfg, "value head dim", "v_head_dim")
    return tuple(CacheLayer(i, "mla", heads, heads * (nope + rope), heads * v) for i in range(n))


def _encoder_len(config: Mapping[str, Any], given: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise WorkloadError("encoder_len", given, "must be a positive integer")
        return given
    if config.get("model_type") == "whisper":
        return _int(config, "encoder positions", "max_source_positions")
    raise WorkloadError(
        "encoder_len",
        None,
        "an encoder-decoder model's cross-attention cache needs the encoder's output length",
    )
