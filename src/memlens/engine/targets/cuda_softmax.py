"""Softmax of fp16 input into fp32, fused on CUDA: the fp32 copy of the input is never made.

``softmax(input, dim, dtype)`` and ``log_softmax(input, dim, dtype)`` (aten/src/ATen/native/
SoftMax.cpp) take a fused path on CUDA::

    if (input_.is_cuda() && input_.scalar_type() == ScalarType::Half && dtype == ScalarType::Float)
        return at::_softmax(input_, dim_, true);  // half_to_float
    Tensor converted = dtype.has_value() ? input_.toType(dtype.value()) : input_;
    return at::_softmax(converted, dim_, false);

On CPU fake tensors the ``else`` branch runs: an fp32 copy of the input (freed after the
kernel) and, in backward, an fp32 gradient that ``ToCopyBackward`` casts back to fp16. CUDA
allocates neither: its backward (``_softmax_backward_data(..., input_dtype=Half)``) writes
the fp16 gradient directly. :class:`CudaSoftmax` routes such calls to ``aten._softmax`` /
``aten._log_softmax`` with ``half_to_float=True``, whose meta kernels and autograd formulas
give CUDA's tensors. bfloat16 is not fused (the test is ``Half`` only), so it is left alone.

Eager attention of fp16 models (OPT's
``softmax(attn_weights, dim=-1, dtype=torch.float32)``) is where this matters: the copy is
``batch x heads x seq x seq`` fp32. Under autocast, CUDA's ``softmax`` policy
(``fp32_set_opt_dtype``, below this mode) passes ``dtype=float32`` to ``softmax`` and
``log_softmax``, which CUDA fuses in the same way for fp16 inputs (attention scores, and the
logits of a cross-entropy): :func:`half_to_float` is called from that policy's kernel
(:mod:`.cuda_autocast`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

aten = torch.ops.aten

_SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax)
_LOG_SOFTMAX = (
    F.log_softmax,
    torch.log_softmax,
    torch.Tensor.log_softmax,
    torch.special.log_softmax,
)
#: Positional index of ``dtype`` (``F.softmax(input, dim, _stacklevel, dtype)``).
_DTYPE_AT = {F.softmax: 3, F.log_softmax: 3}


def _fused_args(func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, int] | None:
    """(input, dim) when CUDA takes the ``half_to_float`` path for this call."""
    if len(args) < 1:
        return None
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    at = _DTYPE_AT.get(func, 2)
    dtype = args[at] if len(args) > at else kwargs.get("dtype")
    if (
        isinstance(x, torch.Tensor)
        and isinstance(dim, int)
        and x.dtype == torch.float16
        and dtype == torch.float32
    ):
        return x, dim
    return None


class CudaSoftmax(TorchFunctionMode):
    """fp16 -> fp32 ``softmax``/``log_softmax`` as CUDA's fused ``half_to_float`` kernels."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func in _SOFTMAX or func in _LOG_SOFTMAX:
            fused = _fused_args(func, args, kwargs)
            if fused is not None:
                op = aten._softmax if func in _SOFTMAX else aten._log_softmax
                return op(fused[0], fused[1], True)
        return func(*args, **kwargs)


#: Autocast op names (``fp32_set_opt_dtype``) -> the kernel CUDA fuses them into.
_AUTOCAST_FUSED = {"softmax.int": aten._softmax, "log_softmax.int": aten._log_softmax}


def half_to_float(name: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``softmax.int``/``log_softmax.int`` with fp16 input and ``dtype=float32``, as CUDA runs
    it (``_softmax(input, dim, half_to_float=True)``); None for any other call."""
    op = _AUTOCAST_FUSED.get(name)
    if op is None:
        return None
    fused = _fused_args(op, args, kwargs)
    return op(fused[0], fused[1], True) if fused is not None else None
