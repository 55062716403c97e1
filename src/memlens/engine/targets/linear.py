"""``F.linear`` on a strided input adds its bias in place, as an unobserved run does.

``at::native::linear`` (aten/src/ATen/native/Linear.cpp) runs ``addmm`` for 2-D inputs and a
flattened ``addmm`` for contiguous ones; any other input (a transposed or ``batch_first`` RNN
output, a permuted map) takes ``matmul`` and then ``output.add_(bias)``, unless the bias is
"tensor-subclass-like" (``isTensorSubclassLike``), when it uses an out-of-place ``at::add`` for
composite compliance. While a dispatch mode is active, every tensor counts as subclass-like,
so the traced step (and any run under a dispatch mode) allocates a second output that the
real step does not: an extra output-sized buffer (+39% for a small LSTM language model's
vocabulary projection). :class:`InPlaceBias` routes those calls to ``matmul`` + ``add_``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class InPlaceBias(TorchFunctionMode):
    """``F.linear`` of a non-2-D, non-contiguous input with a bias: ``matmul`` + ``add_``."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if bias is not None and x.dim() != 2 and not x.is_contiguous():
                return torch.matmul(x, weight.t()).add_(bias)
        return func(*args, **kwargs)
