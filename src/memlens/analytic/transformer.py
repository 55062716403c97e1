"""A decoder-only transformer's shapes, from its Hugging Face ``config.json``, without torch.

:class:`TransformerShape` reads the numbers the closed forms need (hidden size, layers, heads,
key/value heads, FFN width, vocabulary, tied head) for the two layer codes memlens models in
closed form: the Llama family (``LlamaDecoderLayer``: RMSNorm, rotary positions, gated SiLU
MLP, no biases; also Mistral, Qwen2, which share it) and GPT-2 (``GPT2Block``: LayerNorm,
learned positions, GELU MLP, biases; GPT-3 in ``data/configs`` is GPT-2's architecture).
Parameter counts follow the modules' own ``__init__`` (``transformers/models/llama/
modeling_llama.py``: ``LlamaAttention``, ``LlamaMLP``, ``LlamaRMSNorm``;
``models/gpt2/modeling_gpt2.py``: ``GPT2Attention`` ``c_attn``/``c_proj``, ``GPT2MLP``) and
are checked against the bundled configs' counts from a fake build.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memlens._errors import ConfigError

#: ``model_type`` values whose decoder layer is Llama's (same modules, same saved tensors).
LLAMA_TYPES = ("llama", "mistral", "qwen2")
GPT2_TYPES = ("gpt2",)


@dataclass(frozen=True)
class TransformerShape:
    """The shapes of a decoder-only transformer language model.

    ``family`` is ``"llama"`` or ``"gpt2"`` (see the module docstring); ``positions`` is the
    learned position table's length (0: rotary positions).
    """

    name: str
    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    positions: int = 0
    dropout: bool = False  # any dropout probability > 0 (GPT-2's attn/resid/embd_pdrop)
    qkv_bias: bool = False  # Llama's ``attention_bias``; Qwen2 always
    o_bias: bool = False  # Llama's ``attention_bias`` (Qwen2's o_proj has none)
    use_cache: bool = True  # the config's: a forward returns past_key_values (transformers')

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str = "") -> TransformerShape:
        """Read a ``config.json`` dict; a family memlens has no closed form for is refused."""
        kind = config.get("model_type")
        try:
            if kind in LLAMA_TYPES:
                heads = int(config["num_attention_heads"])
                hidden = int(config["hidden_size"])
                return cls(
                    name=name or kind,
                    family="llama",
                    hidden=hidden,
                    layers=int(config["num_hidden_layers"]),
                    heads=heads,
                    kv_heads=int(config.get("num_key_value_heads") or heads),
                    head_dim=int(config.get("head_dim") or hidden // heads),
                    ffn=int(config["intermediate_size"]),
                    vocab=int(config["vocab_size"]),
                    tied=bool(config.get("tie_word_embeddings", False)),
                    dropout=float(config.get("attention_dropout") or 0.0) > 0,
                    qkv_bias=kind == "qwen2" or bool(config.get("attention_bias")),
                    o_bias=kind != "qwen2" and bool(config.get("attention_bias")),
                    use_cache=bool(config.get("use_cache", True)),
                )
            if kind in GPT2_TYPES:
                hidden = int(config["n_embd"])
                heads = int(config["n_head"])
                return cls(
                    name=name or kind,
                    family="gpt2",
                    hidden=hidden,
                    layers=int(config["n_layer"]),
                    heads=heads,
                    kv_heads=heads,
                    head_dim=hidden // heads,
                    ffn=int(config.get("n_inner") or 4 * hidden),
                    vocab=int(config["vocab_size"]),
                    tied=bool(config.get("tie_word_embeddings", True)),
                    positions=int(config["n_positions"]),
                    dropout=any(
                        float(config.get(k) or 0.0) > 0
                        for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop")
                    ),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{name or kind}: config.json lacks a usable {exc}") from None
        raise ConfigError(
            f"{name or kind}: no closed form for model_type {kind!r}; the analytic model "
            f"covers {', '.join(LLAMA_TYPES + GPT2_TYPES)} (trace it instead)"
        )

    # -- parameters --------------------------------------------------------------------------

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_tensors(self) -> list[tuple[str, tuple[int, ...], bool]]:
        """One layer's parameters: (name, shape, split by tensor parallelism).

        Norm weights (and GPT-2's row-parallel output biases) are replicated on every
        tensor-parallel rank, as Megatron's ``RowParallelLinear`` bias and PyTorch's
        ``RowwiseParallel`` (bias replicated) keep them.
        """
        h, q, kv, f = self.hidden, self.q_width, self.kv_width, self.ffn
        if self.family == "llama":
            qkv_bias = [
                (f"self_attn.{p}_proj.bias", (n,), True)
                for p, n in (("q", q), ("k", kv), ("v", kv))
            ]
            return [
                ("input_layernorm.weight", (h,), False),
                ("self_attn.q_proj.weight", (q, h), True),
                ("self_attn.k_proj.weight", (kv, h), True),
                ("self_attn.v_proj.weight", (kv, h), True),
                *(qkv_bias if self.qkv_bias else []),
                ("self_attn.o_proj.weight", (h, q), True),
                *([("self_attn.o_proj.bias", (h,), False)] if self.o_bias else []),
                ("post_attention_layernorm.weight", (h,), False),
                ("mlp.gate_proj.weight", (f, h), True),
                ("mlp.up_proj.weight", (f, h), True),
                ("mlp.down_proj.weight", (h, f), True),
            ]
        return [
            ("ln_1.weight", (h,), False),
            ("ln_1.bias", (h,), False),
            ("attn.c_attn.weight", (h, 3 * h), True),
            ("attn.c_attn.bias", (3 * h,), True),
            ("attn.c_proj.weight", (h, h), True),
            ("attn.c_proj.bias", (h,), False),
            ("ln_2.weight", (h,), False),
            ("ln_2.bias", (h,), False),
            ("mlp.c_fc.weight", (h, f), True),
            ("mlp.c_fc.bias", (f,), True),
            ("mlp.c_proj.weight", (f, h), True),
            ("mlp.c_proj.bias", (h,), False),
        ]

    def embedding_tensors(self) -> list[tuple[str, tuple[int, ...], bool]]:
        """Parameters of the first stage besides its layers (vocabulary-parallel table)."""
        out = [("embed_tokens.weight", (self.vocab, self.hidden), True)]
        if self.positions:
            out.append(("wpe.weight", (self.positions, self.hidden), False))
        return out

    def head_tensors(self) -> list[tuple[str, tuple[int, ...], bool]]:
        """Parameters of the last stage besides its layers: the final norm and an untied
        head (a tied head is the embedding: on one stage with pp = 1, a second copy kept in
        sync on the last stage otherwise, as Megatron's ``shared_embedding`` does)."""
        norm = [("norm.weight", (self.hidden,), False)]
        if self.family == "gpt2":
            norm.append(("norm.bias", (self.hidden,), False))
        return [*norm, ("lm_head.weight", (self.vocab, self.hidden), True)]

    @property
    def layer_params(self) -> int:
        return sum(math.prod(s) for _, s, _ in self.layer_tensors())

    @property
    def num_params(self) -> int:
        """Parameters of the model, a tied head counted once."""
        head = self.head_tensors()
        if self.tied:
            head = head[:-1]
        return (
            self.layers * self.layer_params
            + sum(math.prod(s) for _, s, _ in self.embedding_tensors())
            + sum(math.prod(s) for _, s, _ in head)
        )

    @property
    def largest_layer_params(self) -> int:
        """The most parameters one module holds directly, as DeepSpeed's ``model_to_params``
        counts them (``deepspeed/runtime/zero/stage3.py``): a ``Linear``'s weight and bias,
        or the embedding table."""
        by_module: dict[str, int] = {}
        for name, shape, _ in self.layer_tensors() + self.embedding_tensors() + self.head_tensors():
            module = name.rpartition(".")[0]
            by_module[module] = by_module.get(module, 0) + math.prod(shape)
        return max(by_module.values())


def load_shape(model: str | dict[str, Any]) -> TransformerShape:
    """The shape of a bundled model name (``llama-3-70b``, aliases too), a ``config.json``
    path, or a config dict."""
    if isinstance(model, dict):
        return TransformerShape.from_config(model)
    path = Path(model)
    if path.suffix == ".json":
        try:
            return TransformerShape.from_config(json.loads(path.read_text()), path.stem)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {model}: {exc}") from None
    from memlens.sources import bundled, registry

    name = registry._canonical(bundled, model)
    if name is None:
        raise ConfigError(
            f"{model!r}: the analytic model needs a config (a bundled LLM name or a "
            "config.json path); see `memlens models`"
        )
    return TransformerShape.from_config(bundled.config(name), name)
