"""Dropout on CUDA: the fused kernel, whose mask is one byte per element.

``dropout(input, p, train)`` (aten/src/ATen/native/Dropout.cpp) takes the fused kernel when
``is_fused_kernel_acceptable``: a CUDA input, ``0 < p < 1`` and at least one element::

    if (train && is_fused_kernel_acceptable(input, p))
        return std::get<0>(at::native_dropout(input, p, train));
    return _dropout<false>(input, p, train);

``native_dropout`` (aten/src/ATen/native/cuda/Dropout.cu) returns the output and a ``bool``
mask, which ``NativeDropoutBackward`` keeps. On CPU fake tensors the unfused ``_dropout_impl``
runs instead: a noise tensor of the input's dtype (``empty_like(input).bernoulli_()``,
divided by ``1 - p``), kept by the ``mul`` that applies it: two bytes per element in fp16,
four in fp32, where CUDA keeps one. :class:`CudaDropout` routes such calls to
``aten.native_dropout``, whose meta kernel gives CUDA's bool mask. The in-place
``dropout_`` is never fused (``_dropout<true>``), so it is left alone, as are feature and
alpha dropout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_DROPOUT = (F.dropout, torch.dropout)


def _fused(args: tuple, kwargs: dict) -> tuple[torch.Tensor, float] | None:
    """(input, p) when CUDA's fused kernel runs this ``dropout`` call."""
    names = ("input", "p", "training", "inplace")
    bound = dict(zip(names, args, strict=False)) | kwargs
    x, p = bound.get("input"), bound.get("p", 0.5)
    train = bound.get("training", bound.get("train", True))
    if (
        isinstance(x, torch.Tensor)
        and train
        and not bound.get("inplace", False)
        and isinstance(p, (int, float))
        and 0 < p < 1
        and x.numel() > 0
    ):
        return x, float(p)
    return None


class CudaDropout(TorchFunctionMode):
    """``dropout`` in training as CUDA's fused ``native_dropout`` (bool mask)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func in _DROPOUT:
            fused = _fused(args, kwargs)
            if fused is not None:
                return torch.native_dropout(fused[0], fused[1], True)[0]
        return func(*args, **kwargs)
