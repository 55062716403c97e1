"""Scaled dot-product attention as CUDA runs it, for CUDA-target traces on CPU fake tensors.

The backend choice of ``F.scaled_dot_product_attention`` is made in C++ (a DispatchStub), not
through an op a dispatch mode sees, so on CPU fake tensors the CPU choice would be traced. CUDA
picks flash attention for fp16/bf16 without an explicit mask and memory-efficient attention
otherwise (``sdp_utils.cpp``); both save only the output and a log-sum-exp for backward,
never the ``seq x seq`` score matrix of the math path. :class:`CudaAttention` routes the
call to those ops, whose meta kernels and autograd formulas give CUDA's memory behaviour.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

aten = torch.ops.aten


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    if enable_gqa and k.shape[-3] != q.shape[-3]:  # CUDA kernels expand grouped K/V heads
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    half = q.dtype in (torch.float16, torch.bfloat16)
    if half and attn_mask is None and q.shape[-1] <= 256:
        return aten._scaled_dot_product_flash_attention(
            q, k, v, dropout_p, is_causal, False, scale=scale
        )[0]
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
        attn_mask = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
    if attn_mask is not None:
        attn_mask = attn_mask.expand(*q.shape[:-2], q.shape[-2], k.shape[-2])
    return aten._scaled_dot_product_efficient_attention(
        q, k, v, attn_mask, needs_grad, dropout_p, is_causal, scale=scale
    )[0]


#: Python functions of ``torch.nn.functional`` that call ``scaled_dot_product_attention``
#: themselves (``nn.MultiheadAttention``'s forward without weights): a mode is switched off
#: while it handles a call, so the nested call would take the CPU's choice.
_CALLERS = (F.multi_head_attention_forward,)


class CudaAttention(TorchFunctionMode):
    """Route ``F.scaled_dot_product_attention`` to CUDA's fused attention kernels, also when
    ``torch.nn.functional`` calls it from inside one of :data:`_CALLERS`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **(kwargs or {}))
        if func in _CALLERS:
            own = F.scaled_dot_product_attention  # the module global the caller looks up
            F.scaled_dot_product_attention = _sdpa
            try:
                return func(*args, **(kwargs or {}))
            finally:
                F.scaled_dot_product_attention = own
        return func(*args, **(kwargs or {}))
