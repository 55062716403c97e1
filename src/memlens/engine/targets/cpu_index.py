"""CPU ``index_select``: the copies of ``index_select_out_cpu_``.

``index_select_out_cpu_`` (aten/src/ATen/native/TensorAdvancedIndexing.cpp) takes
``index.contiguous()``, and for a tensor of two or more dimensions selected along dimension 1
into a contiguous result (always, for ``index_select`` allocates it) takes the fast path
``index_select_out_cpu_dim1_``, which reads ``self.contiguous()``: a strided input (a
``(batch, seq, dim)`` view of a ``(seq, batch, dim)`` tensor) is copied for the length of the
call. Other dimensions are gathered slice by slice through TensorIterator, without a copy.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _copy(t: torch.Tensor) -> int:
    return 0 if t.is_contiguous() else t.numel() * t.element_size()


@register_rule(aten.index_select.default)
def index_select(call: OpCall) -> list[int]:
    x, dim, index = call.args[0], call.args[1], call.args[2]
    if call.device != "cpu":
        return []
    copies = _copy(index)
    if x.dim() > 1 and dim % x.dim() == 1 and index.numel() and x.numel():
        copies += _copy(x)
    return [call.out.untyped_storage().nbytes() + copies] if copies else []
