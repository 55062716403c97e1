"""CPU binary elementwise ops: operands converted to the common dtype.

TensorIterator computes ``add``, ``sub``, ``mul``, ``div``, ``rsub`` and the comparisons in
the operands' common dtype (``compute_types`` in aten/src/ATen/TensorIterator.cpp: on CPU, with
``promote_inputs_to_common_dtype``, an input tensor of another dtype is replaced by
``input.to(common_dtype)``, a converted copy of its own size). True division computes integer
operands in the default float dtype (``build_borrowing_binary_float_op``). So ``scores * mask``
with a bool mask holds a float copy of the mask for the call. A Python number is wrapped into
a 0-dim tensor by the op (``wrapped_scalar_tensor``, aten/src/ATen/ScalarOps.h: 8 bytes, and a
converted copy of one element): those few bytes are not counted.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _true_division(call: OpCall) -> bool:
    name = call.func.overloadpacket.__name__
    mode = call.kwargs.get("rounding_mode", call.args[2] if len(call.args) > 2 else None)
    return name in ("div", "div_") and mode is None


_BINARY = [
    getattr(getattr(aten, name), overload)
    for name in ("add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_")
    for overload in ("Tensor", "Scalar")
]
_BINARY += [aten.div.Tensor_mode, aten.div.Scalar_mode, aten.div_.Tensor_mode]
_BINARY += [aten.div_.Scalar_mode, aten.rsub.Tensor, aten.rsub.Scalar]
_BINARY += [
    getattr(getattr(aten, name), overload)
    for name in ("eq", "ne", "lt", "le", "gt", "ge")
    for overload in ("Tensor", "Scalar")
]


@register_rule(*_BINARY)
def binary(call: OpCall) -> list[int]:
    a, b = call.args[0], call.args[1]
    if call.device != "cpu" or not isinstance(a, torch.Tensor):
        return []
    if not isinstance(b, (torch.Tensor, bool, int, float, complex)):
        return []  # a symbolic number (SymInt, SymFloat): not ruled
    common = torch.result_type(a, b)
    if _true_division(call) and not (common.is_floating_point or common.is_complex):
        common = torch.get_default_dtype()
    elem = common.itemsize
    inplace = call.func.overloadpacket.__name__.endswith("_")
    inside = sum(
        x.numel() * elem
        for i, x in enumerate((a, b))
        if isinstance(x, torch.Tensor) and x.dtype != common and not (inplace and i == 0)
    )
    if not inside:
        return []
    out = 0 if inplace else call.out.untyped_storage().nbytes()
    return [out + inside]
