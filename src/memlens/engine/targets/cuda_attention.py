"""Scaled dot-product attention as the target runs it, chosen by the ``attention`` option.

The backend choice of ``F.scaled_dot_product_attention`` is made in C++ (a DispatchStub,
``_fused_sdp_choice_stub``), not through an op a dispatch mode sees, so on CPU fake tensors
the CPU's choice would be traced. :class:`Attention` (a ``TorchFunctionMode``) routes each
call to the kernel the target runs; the kernels' meta functions and autograd formulas give
their memory (output, log-sum-exp, RNG state; :mod:`.cuda_sdpa` adds the buffers inside
their CUDA kernels).

``attention`` (:data:`memlens.workload.ATTENTIONS`) for plain SDPA calls:

- ``auto`` and ``sdpa``: the target's own choice. On CUDA (``sdp_utils.cpp``,
  ``select_sdp_backend``): flash attention for fp16/bf16 on sm80 or newer without an explicit
  mask and with head dim <= 256, memory-efficient attention otherwise; neither keeps the
  ``seq x seq`` scores. On a CPU target nothing is rerouted (the trace *is* the CPU's choice).
- ``eager``: the math path (``_scaled_dot_product_attention_math`` in
  aten/src/ATen/native/transformers/attention.cpp, device-independent composite ops: fp16/bf16
  inputs are upcast to fp32 unless ``allowFP16BF16ReductionMathSDP``), which materialises and
  keeps the scores, on both targets.
- ``flash``: ``_scaled_dot_product_flash_attention``, refused where the CUDA kernel cannot run
  (fp32, head dim > 256, an explicit mask, a GPU older than sm80: ``check_flash_attention_*``
  in ``sdp_utils.cpp``). On a CPU target: PyTorch's CPU flash kernel
  (``_scaled_dot_product_flash_attention_for_cpu``).
- ``mem-efficient``: ``_scaled_dot_product_efficient_attention`` (an additive mask padded to
  a multiple of 16 on its last dim, as ``preprocess_mask``/``pad_bias`` in attention.cpp do).
  Refused on a CPU target, which has no such kernel.

Hugging Face models choose their attention code when built: ``eager`` builds them with
``attn_implementation="eager"`` (their own matmul-softmax code), the SDPA choices with
``"sdpa"`` (:mod:`memlens.sources.huggingface`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from memlens._errors import WorkloadError
from memlens.targets import Target

aten = torch.ops.aten

_SDPA = F.scaled_dot_product_attention  # the function itself, for the CPU's own choice

#: Flash attention's largest head dim (``check_head_dim_size_flash`` in sdp_utils.cpp).
FLASH_MAX_HEAD_DIM = 256
#: Memory-efficient attention's mask alignment (``mem_eff_alignment`` in attention.cpp).
MEM_EFF_MASK_ALIGN = 16


def sm_version(target: Target) -> int | None:
    """The target GPU's compute capability as ``major * 10 + minor`` (None: generic)."""
    arch = target.device.arch if target.device is not None else ""
    return int(arch[2:]) if arch.startswith("sm") and arch[2:].isdigit() else None


def _refuse(value: str, why: str) -> WorkloadError:
    return WorkloadError("attention", value, why + "; choose --attention auto, sdpa or eager")


def flash_refusal(q: torch.Tensor, mask: Any, target: Target) -> str | None:
    """Why CUDA's flash kernel cannot run this call (None: it can)."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"flash attention runs fp16 or bf16 only (the inputs are {q.dtype})"
    if q.shape[-1] > FLASH_MAX_HEAD_DIM:
        return f"flash attention takes head dim <= {FLASH_MAX_HEAD_DIM} (got {q.shape[-1]})"
    if mask is not None:
        return "flash attention takes no explicit attention mask"
    sm = sm_version(target)
    if sm is not None and sm < 80:
        return f"flash attention needs sm80 or newer (the target is sm{sm})"
    return None


def _expand_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool):
    if enable_gqa and k.shape[-3] != q.shape[-3]:  # CUDA kernels expand grouped K/V heads
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    return k, v


def _flash(q, k, v, dropout_p, is_causal, scale):
    return aten._scaled_dot_product_flash_attention(
        q, k, v, dropout_p, is_causal, False, scale=scale
    )[0]


def _efficient(q, k, v, attn_mask, dropout_p, is_causal, scale):
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
        attn_mask = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*q.shape[:-2], q.shape[-2], k.shape[-2])
        n = attn_mask.shape[-1]
        if n % MEM_EFF_MASK_ALIGN:  # pad_bias: a padded copy, sliced back to n
            pad = MEM_EFF_MASK_ALIGN - n % MEM_EFF_MASK_ALIGN
            attn_mask = F.pad(attn_mask, (0, pad))[..., :n]
    return aten._scaled_dot_product_efficient_attention(
        q, k, v, attn_mask, needs_grad, dropout_p, is_causal, scale=scale
    )[0]


class Attention(TorchFunctionMode):
    """Route ``F.scaled_dot_product_attention`` to the kernel ``attention`` picks on
    ``target``, also when ``torch.nn.functional`` calls it from one of :data:`_CALLERS`."""

    def __init__(self, target: Target, attention: str = "auto") -> None:
        super().__init__()
        self.target, self.attention = target, attention

    def sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        choice = self.attention
        if choice == "eager" or self.target.kind != "cuda":
            backend = {"eager": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}.get(choice)
            if choice == "mem-efficient":
                raise _refuse(choice, "a CPU target has no memory-efficient attention kernel")
            with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                return _SDPA(
                    q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
                )
        k, v = _expand_gqa(q, k, v, enable_gqa)
        scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        refusal = flash_refusal(q, attn_mask, self.target)
        if choice == "flash":
            if refusal is not None:
                raise _refuse(choice, refusal)
            return _flash(q, k, v, dropout_p, is_causal, scale)
        if choice in ("auto", "sdpa") and refusal is None:
            return _flash(q, k, v, dropout_p, is_causal, scale)
        return _efficient(q, k, v, attn_mask, dropout_p, is_causal, scale)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        if func is F.scaled_dot_product_attention:
            return self.sdpa(*args, **(kwargs or {}))
        if func in _CALLERS:
            own = F.scaled_dot_product_attention  # the module global the caller looks up
            F.scaled_dot_product_attention = self.sdpa
            try:
                return func(*args, **(kwargs or {}))
            finally:
                F.scaled_dot_product_attention = own
        return func(*args, **(kwargs or {}))


#: Python functions of ``torch.nn.functional`` that call ``scaled_dot_product_attention``
#: themselves (``nn.MultiheadAttention``'s forward without weights): a mode is switched off
#: while it handles a call, so the nested call would take the CPU's choice.
_CALLERS = (F.multi_head_attention_forward,)


def rerouted(target: Target, attention: str) -> bool:
    """Whether SDPA calls need :class:`Attention` (a CPU target's ``auto``/``sdpa`` is the
    traced CPU's own choice)."""
    return target.kind == "cuda" or attention not in ("auto", "sdpa")
