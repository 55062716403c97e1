"""CPU reductions of half-precision tensors: the fp32 copies ``mean`` and ``sum`` make inside.

On CPU, ``mean`` of a bfloat16 or float16 tensor is computed as cast to fp32, sum, divide,
cast back (``mean_out`` in aten/src/ATen/native/ReduceOps.cpp, "For accuracy reasons,
BF16/FP16 mean should be computed via the following approach"): it makes an fp32 copy of
the result, then ``sum_out`` makes an fp32 copy of the input; both are alive together and
freed before the op returns.

``sum`` of a half-precision tensor over reduced dimensions that TensorIterator cannot
coalesce into one (``should_use_acc_buffer`` in ReduceOps.cpp, pytorch issue 83149: the two
innermost iterator dimensions are both reduced, e.g. a convolution's bias gradient, the sum
of an NCHW tensor over N, H and W) accumulates in fp32 instead: ``sum_out`` allocates an fp32
result and ``self.to(kFloat)``, a copy of the input, with its own result already allocated.
Fake tensors run the meta functions, which make none of these.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten
_HALF = (torch.bfloat16, torch.float16)


@register_rule(aten.mean.default, aten.mean.dim)
def half_mean(call: OpCall) -> list[int]:
    x, out = call.args[0], call.out
    if call.device != "cpu" or out.dtype not in _HALF:
        return []
    return [4 * x.numel() + 4 * out.numel()]


def sum_acc_buffer(
    shape: Sequence[int], strides: Sequence[int], dims: Sequence[int] | None, dtype: torch.dtype
) -> int:
    """Bytes of the fp32 result and input copy of a CPU ``sum`` of a ``dtype`` tensor into
    ``dtype`` (0: none).

    TensorIterator moves the reduced dimensions innermost, ordered by the input's strides,
    and coalesces neighbours contiguous in memory; the buffer is taken when the reduced
    dimensions stay at least two iterator dimensions (size-1 dimensions drop out)."""
    if dtype not in _HALF:
        return 0
    reduced = {d % len(shape) for d in dims} if dims else set(range(len(shape)))
    axes = sorted((strides[d], shape[d]) for d in reduced if shape[d] > 1)
    merged = sum(o[0] == i[0] * i[1] for i, o in itertools.pairwise(axes))  # contiguous pairs
    if len(axes) - merged < 2:
        return 0
    numel = math.prod(shape)
    return 4 * (numel // math.prod(size for _, size in axes)) + 4 * numel


@register_rule(aten.sum.dim_IntList)
def half_sum(call: OpCall) -> list[int]:
    x, out = call.args[0], call.out
    dims = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
    if call.device != "cpu" or out.dtype != x.dtype:
        return []
    acc = sum_acc_buffer(x.shape, x.stride(), dims, x.dtype)
    return [out.untyped_storage().nbytes() + acc] if acc else []
