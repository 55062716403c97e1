"""LoRA (Hu et al. 2021): frozen linear layers plus trainable low-rank adapters.

:class:`LoRALinear` wraps a linear layer as PEFT's ``lora.Linear`` does: the base layer
(frozen, possibly quantised) computes ``W x``, the adapters ``lora_A`` (``r x in``) and
``lora_B`` (``out x r``) add ``(alpha / r) B A dropout(x)``, out of place. Every other
parameter of the model is frozen, as ``peft.get_peft_model`` does. PEFT is not needed.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from memlens._errors import ConfigError
from memlens.workload import LoraConfig

#: PEFT's default target modules per ``config.model_type``
#: (peft/utils/constants.py, ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
    "whisper": ("q_proj", "v_proj"),
    "clip": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "vit": ("query", "value"),
    "t5": ("q", "v"),
    "phi3": ("qkv_proj",),
    "falcon": ("query_key_value",),
    "gpt_neox": ("query_key_value",),
    "bloom": ("query_key_value",),
}

#: Name sets tried in order when the model has no ``config.model_type`` entry above.
_FALLBACK = list(dict.fromkeys(DEFAULT_TARGETS.values()))


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in_features, out_features)`` of a linear-like layer: ``nn.Linear``, Hugging Face's
    ``Conv1D`` (GPT-2; weight stored ``in x out``) or a quantised linear; else ``None``."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    dims = getattr(module, "linear_dims", None)
    if dims is not None:
        return dims
    w = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2:
        return w.shape[0], w.shape[1]
    return None


class LoRALinear(nn.Module):
    """A frozen linear-like ``base_layer`` plus trainable low-rank adapters."""

    def __init__(
        self, base_layer: nn.Module, r: int, alpha: float, dropout: float, dtype: torch.dtype
    ) -> None:
        super().__init__()
        dims = linear_dims(base_layer)
        assert dims is not None
        in_f, out_f = dims
        device = next(base_layer.parameters()).device
        self.base_layer = base_layer.requires_grad_(False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(in_f, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_f, bias=False, device=device, dtype=dtype)
        self.scaling = alpha / r

    @property
    def linear_dims(self) -> tuple[int, int]:
        return self.lora_A.in_features, self.lora_B.out_features

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        if x.dtype != self.lora_A.weight.dtype:  # PEFT's _cast_input_dtype
            x = x.to(self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return result.to(result_dtype)


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """The usual attention projections of the model's family (PEFT's defaults)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    leaf_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if linear_dims(m)}
    for targets in _FALLBACK:
        if all(t in leaf_names for t in targets):
            return targets
    examples = ", ".join(sorted(leaf_names)[:8]) or "none"
    raise ConfigError(
        "LoRA has no default target modules for this model: pass targets=NAME,NAME "
        f"(its linear layers are named: {examples})"
    )


def _targeted(name: str, targets: tuple[str, ...]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return any(leaf == t or fnmatch.fnmatchcase(name, t) for t in targets)


def apply_lora(model: nn.Module, config: LoraConfig, dtype: torch.dtype) -> int:
    """Freeze every parameter and wrap the target layers; returns the adapter parameter count.

    Adapters are created in ``dtype`` (the model's storage precision: half precision for
    ``bf16``/``fp16``, fp32 under AMP).
    """
    targets = config.targets or default_targets(model)
    model.requires_grad_(False)
    hits = [
        (name, module)
        for name, module in model.named_modules()
        if name and linear_dims(module) is not None and _targeted(name, targets)
    ]
    if not hits:
        raise ConfigError(f"LoRA targets {', '.join(targets)} match no linear layer of the model")
    added = 0
    for name, module in hits:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        wrapped = LoRALinear(module, config.r, config.alpha, config.dropout, dtype)
        setattr(parent, child, wrapped)
        added += wrapped.lora_A.weight.numel() + wrapped.lora_B.weight.numel()
    return added
