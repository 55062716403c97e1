"""CPU ``index_select`` and ``roll``: their copies and intermediates.

``index_select_out_cpu_`` (aten/src/ATen/native/TensorAdvancedIndexing.cpp) takes
``index.contiguous()``, and for a tensor of two or more dimensions selected along dimension 1
into a contiguous result (always, for ``index_select`` allocates it) takes the fast path
``index_select_out_cpu_dim1_``, which reads ``self.contiguous()``: a strided input (a
``(batch, seq, dim)`` view of a ``(seq, batch, dim)`` tensor) is copied for the length of the
call. Other dimensions are gathered slice by slice through TensorIterator, without a copy.

``roll_cpu`` (aten/src/ATen/native/TensorTransformations.cpp) rolls one dimension into a new
tensor; ``roll_common`` rolls several by recursion, ``roll(roll(self, s0, d0), tail)``: each
intermediate (a contiguous tensor of the input's size) lives until the innermost call
returns, so ``k`` dimensions hold ``k - 1`` of them beside the output (Swin's shifted windows
roll two). A flattened roll (no dimension given) reads ``self.contiguous()``.
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


@register_rule(aten.roll.default)
def roll(call: OpCall) -> list[int]:
    x, dims = call.args[0], call.args[2] if len(call.args) > 2 else call.kwargs.get("dims", ())
    if call.device != "cpu" or not x.numel():
        return []
    size = x.numel() * x.element_size()
    inside = (len(dims) - 1) * size if len(dims) > 1 else _copy(x) if not dims else 0
    return [call.out.untyped_storage().nbytes() + inside] if inside else []
