"""Embedding backward on CUDA: sorting the indices and per-segment partial sums.

``embedding_dense_backward_cuda`` (aten/src/ATen/native/cuda/Embedding.cu): with at most
3072 indices and no ``scale_grad_by_freq`` it accumulates straight into ``grad_weight`` (no
buffer beyond the output). Otherwise it radix-sorts the indices into ``sorted_indices`` and
``orig_indices`` (``empty_like(indices)`` each; the ``arange`` it sorts with is freed inside
the dispatch lambda) and calls ``embedding_backward_cuda_kernel``
(aten/src/ATen/native/cuda/EmbeddingBackwardKernel.cu), which allocates, all alive when its
last kernel (``sum_and_scatter``) runs:

- ``grad_weight = at::zeros({num_weights, D})``: the op's output;
- ``segment_offsets = at::empty({numel})`` in the index dtype;
- ``partials_per_segment`` and ``partials_per_segment_offset``: ``max_segments =
  min(numel, num_weights)`` indices each;
- ``partial_segment_offset``: ``max_partial_segment = numel / NROWS_PER_THREAD +
  max_segments`` indices (``NROWS_PER_THREAD = 10``);
- ``grad_weight_per_segment = at::empty({max_partial_segment, stride})`` in fp32 for
  half-precision gradients (``acc_type``), the gradient's dtype otherwise;
- two 0-dim int64 counters.

Not modelled: cub's radix-sort temporary storage (sized by cub), and the single-pass atomic
path of recent versions (taken when there are few partial segments for the GPU's SM count,
which memlens does not know from the trace).
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten

#: ``num_indices <= 3072 && !scale_grad_by_freq`` takes the direct path (Embedding.cu).
DIRECT_MAX_INDICES = 3072
NROWS_PER_THREAD = 10


def sorted_backward_bytes(
    num_indices: int, num_weights: int, dim: int, grad_dtype: torch.dtype, index_size: int = 8
) -> int:
    """Bytes alive inside the sorted path when ``sum_and_scatter`` runs, the output
    ``grad_weight`` included."""
    elem = torch.empty((), dtype=grad_dtype).element_size()
    acc = 4 if grad_dtype in (torch.float16, torch.bfloat16) else elem
    max_segments = min(num_indices, num_weights)
    max_partial = num_indices // NROWS_PER_THREAD + max_segments
    indices = index_size * (2 * num_indices + num_indices + 2 * max_segments + max_partial)
    return num_weights * dim * elem + indices + max_partial * dim * acc + 2 * 8


@register_rule(aten.embedding_dense_backward.default)
def embedding_backward(call: OpCall) -> list[int]:
    grad, indices, num_weights = call.args[0], call.args[1], call.args[2]
    scale_grad_by_freq = call.args[4] if len(call.args) > 4 else False
    n = indices.numel()
    if n <= DIRECT_MAX_INDICES and not scale_grad_by_freq:
        return []
    return [
        sorted_backward_bytes(n, num_weights, grad.shape[-1], grad.dtype, indices.element_size())
    ]
