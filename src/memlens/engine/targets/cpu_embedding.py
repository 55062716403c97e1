"""CPU embedding backward: the contiguous copies of ``embedding_dense_backward_cpu``.

``embedding_dense_backward_cpu`` (aten/src/ATen/native/Embedding.cpp) allocates the zeroed
``grad_weight``, then ``indices.contiguous()`` and ``grad_.contiguous()``: a strided incoming
gradient (an LSTM language model's ``(seq, batch, dim)`` output read batch-first) or strided
indices are copied, alive together with ``grad_weight`` until it returns. The frequency counts
of ``scale_grad_by_freq`` are a ``new index_t[num_weights]`` array outside PyTorch's allocator
(not seen by the profiler's allocation records; not counted).
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _copy(t: torch.Tensor) -> int:
    """Bytes ``contiguous()`` allocates for ``t`` (0 when already contiguous)."""
    return 0 if t.is_contiguous() else t.numel() * t.element_size()


@register_rule(aten.embedding_dense_backward.default)
def embedding_dense_backward(call: OpCall) -> list[int]:
    grad, indices = call.args[0], call.args[1]
    copies = _copy(grad) + _copy(indices)
    if call.device != "cpu" or not copies:
        return []
    return [call.out.untyped_storage().nbytes() + copies]
