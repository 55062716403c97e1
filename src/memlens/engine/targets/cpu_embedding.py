"""CPU embedding backwards: ``embedding_dense_backward``'s copies, the embedding bag's buffers.

``embedding_dense_backward_cpu`` (aten/src/ATen/native/Embedding.cpp) allocates the zeroed
``grad_weight``, then ``indices.contiguous()`` and ``grad_.contiguous()``: a strided incoming
gradient (an LSTM language model's ``(seq, batch, dim)`` output read batch-first) or strided
indices are copied, alive together with ``grad_weight`` until it returns. The frequency counts
of ``scale_grad_by_freq`` are a ``new index_t[num_weights]`` array outside PyTorch's allocator
(not seen by the profiler's allocation records; not counted).

``_embedding_bag_backward_symint`` (aten/src/ATen/native/EmbeddingBag.cpp), dense: a sum-mode
forward's fast path returns ``offset2bag`` empty, so the backward makes it (``new_zeros(n + 1)``
in the offsets' type, ``make_offset2bag``'s ``cumsum_`` a second one for a moment); then
``_embedding_bag_dense_backward_cpu`` takes ``grad_.contiguous()`` and allocates the zeroed
``index_grad_weight`` (the output). Sum and mean (``_embedding_bag_dense_backward_cpu_sum_mean``)
sort the ``n`` indices (sorted values in the index type, an int64 permutation and an int64
temporary), then gather ``offset2bag`` (and ``per_sample_weights``) in that order; the counts
are ``std::vector``s (not counted). Max (``_embedding_bag_dense_backward_cpu_max``) gathers the
arg-max indices and gradient rows of the non-empty bags (``bag_size.nonzero()``, int64; every
bag is assumed non-empty, the upper bound) and adds them column by column. Sparse gradients
(``_embedding_bag_sparse_backward``) are not ruled.
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


@register_rule(aten._embedding_bag_backward.default)
def embedding_bag_backward(call: OpCall) -> list[int]:
    grad, indices, offsets, offset2bag, _, max_indices = call.args[:6]
    mode, sparse = call.args[8], call.args[9]
    psw = call.args[10] if len(call.args) > 10 else call.kwargs.get("per_sample_weights")
    if call.device != "cpu" or sparse:
        return []
    n, isz, elem = indices.numel(), indices.element_size(), grad.element_size()
    made = (n + 1) * offsets.element_size() if n and offset2bag.numel() == 0 else 0
    making = made + max(offsets.numel() * offsets.element_size(), made)  # make_offset2bag
    out = call.out.untyped_storage().nbytes()
    held = made + _copy(grad) + out
    if mode == 2:  # max: nonempty arg-max indices and gradient rows, the nonzero() rows
        bags, d = grad.shape[0], grad.shape[1]
        inside = bags * d * max_indices.element_size() + bags * d * elem + bags * 8
    else:  # sum, mean: sorted indices, permutation, temporary / gathered offset2bag, weights
        gathered = n * isz + (n * psw.element_size() if psw is not None else 0)
        inside = n * isz + 8 * n + max(8 * n, gathered)
    return [max(making, held + inside)]
