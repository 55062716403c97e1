"""CPU flash attention: the per-thread buffers of ``_scaled_dot_product_flash_attention_for_cpu``
and of its backward, and the backward's copy of the incoming gradient.

``cpu_flash_attention`` (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp) splits the queries
into blocks of ``qSplitSize`` rows (32, 64 from 192 queries on, 256 from 768 on,
``flash_attention_kernel_impl``) and the keys into blocks of ``kvSplitSize`` (512), each at
most the sequence length, and allocates after the output and its log-sum-exp:

- ``buf``: ``num_thread x (qSplit*kvSplit + 2*qSplit + qSplit*headSize)`` of the accumulation
  type (fp32 for fp16/bf16): scores, row max and sum, output accumulator;
- ``buf_reduced``: ``num_thread x qSplit x kvSplit`` of the input type, for fp16/bf16 only.

``cpu_flash_attention_backward`` (same file), called by ``flash_attention_backward_kernel_impl``
after ``grad_out.contiguous()`` of the gradient in (batch, seq, head, dim) order (a copy unless
that view is contiguous: :func:`_scaled_dot_product_flash_attention_cpu_backward` in
aten/src/ATen/native/transformers/attention.cpp transposes it, and allocates ``grad_q``,
``grad_k``, ``grad_v`` with ``at::zeros`` first), allocates:

- ``buf``: ``num_thread x 2 x qSplit x kvSplit`` of the accumulation type (attention, its
  gradient);
- ``buf_reduced``: the same in the input type, for fp16/bf16 only;
- ``dsum``: ``qSplit`` accumulation-type values per ``parallel_for`` chunk; only the calling
  thread's is counted (the profiler's allocation records, which measure a step, do not see
  the worker threads').

Not modelled: for fp16 on CPUs with AMX-FP16 (``cpublas::need_pack``), the forward's packed
key and value copies; for fp16/bf16, the scratch of ``cpublas::gemm``'s reduced-precision
calls inside the backward's loop.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten

#: ``kv_split_size`` of every ``cpu_flash_attention`` instantiation.
_KV_SPLIT = 512


def _splits(q_len: int, kv_len: int) -> tuple[int, int]:
    """(qSplitSize, kvSplitSize): ``flash_attention_kernel_impl``'s template choice, each
    capped at its sequence length."""
    q_split = 256 if q_len >= 768 else 64 if q_len >= 192 else 32
    return min(q_split, q_len), min(_KV_SPLIT, kv_len)


def _accum_size(dtype: torch.dtype) -> int:
    """Bytes of ``at::opmath_type`` (fp32 for fp16/bf16)."""
    return 4 if dtype in (torch.float16, torch.bfloat16) else dtype.itemsize


def _outputs(out: tuple) -> int:
    storages = {
        t.untyped_storage()._cdata: t.untyped_storage().nbytes()
        for t in out
        if isinstance(t, torch.Tensor)
    }
    return sum(storages.values())


@register_rule(aten._scaled_dot_product_flash_attention_for_cpu.default)
def flash_attention(call: OpCall) -> list[int]:
    """Forward: output and log-sum-exp, then ``buf`` (and ``buf_reduced``)."""
    q, k = call.args[0], call.args[1]
    if call.device != "cpu":
        return []
    (_, _, q_len, head), kv_len = q.shape, k.shape[2]
    q_split, kv_split = _splits(q_len, kv_len)
    threads, reduced = torch.get_num_threads(), q.dtype in (torch.float16, torch.bfloat16)
    per_thread = q_split * kv_split + 2 * q_split + q_split * head
    buf = threads * per_thread * _accum_size(q.dtype)
    buf_reduced = threads * q_split * kv_split * q.element_size() if reduced else 0
    return [_outputs(call.out) + buf + buf_reduced]


@register_rule(aten._scaled_dot_product_flash_attention_for_cpu_backward.default)
def flash_attention_backward(call: OpCall) -> list[int]:
    """Backward: the three gradients, the incoming gradient's copy, ``buf`` (and
    ``buf_reduced``), one ``dsum``."""
    grad_out, q, k = call.args[0], call.args[1], call.args[2]
    if call.device != "cpu":
        return []
    q_len, kv_len = q.shape[2], k.shape[2]
    q_split, kv_split = _splits(q_len, kv_len)
    threads, reduced = torch.get_num_threads(), q.dtype in (torch.float16, torch.bfloat16)
    accum = _accum_size(q.dtype)
    copy = 0 if grad_out.transpose(1, 2).is_contiguous() else grad_out.numel() * q.element_size()
    buf = threads * 2 * q_split * kv_split * accum
    buf_reduced = threads * 2 * q_split * kv_split * q.element_size() if reduced else 0
    return [_outputs(call.out) + copy + buf + buf_reduced + q_split * accum]
