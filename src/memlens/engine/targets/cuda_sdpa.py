"""Buffers inside CUDA's fused attention kernels that their meta kernels do not return.

The forward meta kernels already give what CUDA keeps: flash attention's output, its fp32
log-sum-exp ``[B, H, Sq]`` and the philox RNG state (``mha_fwd`` in
aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp); memory-efficient
attention's output and its log-sum-exp padded to a multiple of 32 (``kAlignLSE`` in
``_efficient_attention_forward``, attention.cu). What is missing is the backward kernels'
scratch, allocated and freed inside the op (rules below). The outputs (``dq, dk, dv``) are
allocated before the scratch and coexist with it, so each transient includes them.

Not modelled (listed as unknowns by the rule set's docstring table): the memory-efficient
backward ``workspace`` (its size is set by the template constants of the kernel the
generated dispatch picks, ``kernel_backward.h``), the split-KV accumulators of flash's forward
(only when ``num_splits_heuristic`` picks more than one split, which training shapes do not),
and the cuDNN attention backend.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten

_FP32 = 4


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _outputs(call: OpCall) -> int:
    return sum(_nbytes(t) for t in call.out if isinstance(t, torch.Tensor))


def _copy_unless_contiguous(t: torch.Tensor) -> int:
    """``t.contiguous()`` of the ``[B, S, H, D]`` view the kernel reads."""
    view = t.transpose(1, 2)
    return 0 if view.is_contiguous() else _nbytes(t)


def flash_backward_scratch(batch: int, heads: int, seq_q: int, head_dim: int) -> int:
    """``mha_bwd`` (flash_api.cpp): ``softmax_d`` fp32 ``[B, H, round(Sq, 128)]`` and
    ``dq_accum`` fp32 ``[B, round(Sq, 128), H, round(D, 32 if D <= 128 else 64)]`` (the
    non-deterministic path). ``head_size_rounded`` as in the flash-attention 2 copy PyTorch
    vendors (``round_multiple(head_size, head_size <= 128 ? 32 : 64)``; earlier copies round
    to 32 only, which differs for head dims above 128)."""
    seq_rounded = _round_up(seq_q, 128)
    head_rounded = _round_up(head_dim, 32 if head_dim <= 128 else 64)
    softmax_d = batch * heads * seq_rounded * _FP32
    dq_accum = batch * seq_rounded * heads * head_rounded * _FP32
    return softmax_d + dq_accum


@register_rule(aten._scaled_dot_product_flash_attention_backward.default)
def flash_backward(call: OpCall) -> list[int]:
    """``_flash_attention_backward`` (attention_backward.cu) makes ``grad_out`` and ``out``
    contiguous as ``[B, S, H, D]`` ("CUDA code assumes that dout is contiguous"), then
    ``mha_bwd`` allocates ``dq, dk, dv`` and its scratch."""
    grad_out, q = call.args[0], call.args[1]
    out = call.args[4]
    b, h, s, d = q.shape
    copies = _copy_unless_contiguous(grad_out) + _copy_unless_contiguous(out)
    return [copies + _outputs(call) + flash_backward_scratch(b, h, s, d)]


def efficient_backward_delta(q: torch.Tensor, out: torch.Tensor) -> int:
    """``delta`` of ``_efficient_attention_backward`` (attention_backward.cu):
    ``at::empty({B, nH, M}, Float)`` when the kernel computes it (``kKernelComputesDelta``:
    half-precision inputs), otherwise
    ``(grad_out.to(kFloat) * out.to(kFloat)).sum(-1).transpose(-2, -1).contiguous()``: for
    fp32 the casts are no-ops, the product is one ``out``-sized fp32 tensor and the sum and
    its contiguous copy ``[B, M, H]`` fp32 each; all temporaries of one C++ expression."""
    b, h, m, _ = q.shape
    rows = b * h * m * _FP32
    if q.dtype in (torch.float16, torch.bfloat16):
        return rows
    return out.numel() * _FP32 + 2 * rows


@register_rule(aten._scaled_dot_product_efficient_attention_backward.default)
def efficient_backward(call: OpCall) -> list[int]:
    q, out = call.args[1], call.args[5]
    return [_outputs(call) + efficient_backward_delta(q, out)]
