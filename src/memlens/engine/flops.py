"""FLOPs per ATen op: one table for the engine and :func:`memlens.layers`.

The table is ``torch.utils.flop_counter``'s registry (matrix products, convolutions, the
CUDA attention kernels) plus memlens's formulas, which take precedence: the ops the registry
lacks, met on CPU targets (the fused inference paths of ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer``, CPU flash attention), and the backward of the fused attention
kernels.

Attention FLOPs are those of the math, whichever kernel runs it: forward, ``Q K^T`` and
``softmax(.) V`` (``2*b*h*s_q*s_k*d`` each); backward, the four products of their gradients,
twice the forward. So a CUDA target, whose trace routes ``scaled_dot_product_attention`` to
flash or memory-efficient attention, counts what the CPU flash kernel or the decomposed math
path (``bmm`` ops) counts. PyTorch's own backward formula adds the scores that flash kernels
recompute instead of saving; that work depends on the kernel, so it is left out here. Causal
masks are not discounted (as in PyTorch's counter). Every formula is a function of shapes.

Known limitations: ops outside the table (element-wise ops, norms, softmax, ``mv``, ``dot``)
count zero, so FLOPs are those of matrix products, convolutions and attention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.flop_counter import (
    bmm_flop,
    flop_registry,
    mm_flop,
    sdpa_flop_count,
    shape_wrapper,
)

aten = torch.ops.aten

#: A formula as the table holds it: called with the op's own arguments and ``out_val=`` its
#: output, returns FLOPs.
FlopFormula = Callable[..., int]

_EXTRA: dict[Any, FlopFormula] = {}


def _formula(*ops: Any) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register a shape formula (tensors arrive as their shapes) for ``ops``, in place of
    PyTorch's if it has one; a duplicate is refused."""

    def wrap(fn: Callable[..., int]) -> Callable[..., int]:
        for op in ops:
            if not isinstance(op, torch._ops.OpOverloadPacket):
                raise TypeError(f"FLOP formulas are keyed by op packets, got {op!r}")
            if op in _EXTRA:
                raise ValueError(f"duplicate FLOP formula for {op}")
            _EXTRA[op] = shape_wrapper(fn)
        return fn

    return wrap


def _heads(shape: Any, num_heads: int) -> tuple[int, int, int, int]:
    """A ``(batch, seq, embed)`` shape split into ``(batch, heads, seq, head_dim)``."""
    b, s, d = shape
    return b, num_heads, s, d // num_heads


def _attention_block(query: Any, key: Any, embed_dim: int, num_heads: int) -> int:
    """``embed x embed`` projections of Q and the output (``query``'s length) and of K and V
    (``key``'s length), plus the attention itself."""
    b, s_q, _ = query
    s_k, d = key[1], embed_dim
    projections = 2 * bmm_flop((b, s_q, d), (b, d, d)) + 2 * bmm_flop((b, s_k, d), (b, d, d))
    kv = _heads((b, s_k, d), num_heads)
    return projections + sdpa_flop_count(_heads((b, s_q, d), num_heads), kv, kv)


@_formula(aten._native_multi_head_attention)
def native_multi_head_attention(
    query: Any, key: Any, value: Any, embed_dim: int, num_head: int, *args: Any, **kwargs: Any
) -> int:
    """``nn.MultiheadAttention``'s inference fast path: Q, K, V and output projections, then
    the attention."""
    return _attention_block(query, key, embed_dim, num_head)


@_formula(aten._transformer_encoder_layer_fwd)
def transformer_encoder_layer(
    src: Any,
    embed_dim: int,
    num_heads: int,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    proj_bias: Any,
    use_gelu: bool,
    norm_first: bool,
    eps: float,
    norm_weight_1: Any,
    norm_bias_1: Any,
    norm_weight_2: Any,
    norm_bias_2: Any,
    ffn_weight_1: Any,
    *args: Any,
    **kwargs: Any,
) -> int:
    """``nn.TransformerEncoderLayer``'s inference fast path: self-attention, then the two
    linear layers of the feed-forward block (``ffn_weight_1`` is ``ff x embed``)."""
    b, s, d = src
    ff = ffn_weight_1[0]
    feed_forward = mm_flop((b * s, d), (d, ff)) + mm_flop((b * s, ff), (ff, d))
    return _attention_block(src, src, embed_dim, num_heads) + feed_forward


@_formula(aten._scaled_dot_product_flash_attention_for_cpu)
def cpu_flash_attention(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    """CPU flash attention (``scaled_dot_product_attention`` on CPU): the two products."""
    return sdpa_flop_count(query, key, value)


@_formula(
    aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_cudnn_attention_backward,
)
def attention_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
) -> int:
    """Backward of fused attention: the gradients of the scores and of V, then of Q and K;
    twice the forward, as the math path's four ``bmm`` ops."""
    return 2 * sdpa_flop_count(query, key, value)


#: Op packet -> formula: PyTorch's registry and memlens's additions, read-only.
FLOP_FORMULAS: Mapping[Any, FlopFormula] = MappingProxyType({**flop_registry, **_EXTRA})


def count_flops(
    func: Any,
    args: tuple,
    kwargs: dict,
    out: Any,
    formulas: Mapping[Any, FlopFormula] = FLOP_FORMULAS,
) -> int:
    """FLOPs of one call of the ATen op ``func`` (0 for an op the table has no formula for)."""
    formula = formulas.get(func.overloadpacket)
    if formula is None:
        return 0
    return int(formula(*args, **kwargs, out_val=out))
