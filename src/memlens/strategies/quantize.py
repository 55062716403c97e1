"""Weight quantisation of linear layers, in bitsandbytes' storage layouts.

:func:`quantize` replaces every linear-like layer except the output head (as transformers'
bitsandbytes integration skips ``lm_head``) by a :class:`QuantLinear` that holds its weight
in one of the layer formats of :mod:`memlens.formats` (the payload and the constants that
table lists, as parameters of the shapes and dtypes bitsandbytes gives them):

- ``int8``: LLM.int8 (``bnb.nn.Linear8bitLt``);
- ``int4``: ``load_in_4bit`` with its defaults (``bnb.nn.Linear4bit``, FP4, no double
  quantisation);
- ``nf4``: QLoRA's setting (NF4 with double quantisation), whose nested map is one tensor
  shared by all layers.

All of these are parameters that take no gradient (the quantised base is frozen); biases
stay in the model's precision and may train.

The forward pass dequantises the weight into a temporary, multiplies, and frees it; so does
the backward pass (``MatMul4Bit``: only the quantised weight is kept for backward, not the
input). Like bitsandbytes, 4-bit layers cast their input to the compute dtype and back.
The dequantisation *allocations* are bitsandbytes' (``dequantize_4bit``: an fp32 absmax
vector when nested, then an output in the weight's original dtype, then ``.to(A.dtype)``);
their values are not computed, since bitsandbytes does that in a CUDA kernel and memory
never depends on them.

Known limitations: LLM.int8's forward quantises the input and runs an int8 matmul (an
``int8`` copy of the input and an ``int32`` output) instead of dequantising the weight;
memlens dequantises in both passes (bitsandbytes' backward formula), and keeps the input
for backward as ``MatMul8bitLt`` does. bitsandbytes' single-token inference path
(``gemv_4bit``, no dequantisation) is not modelled.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memlens.formats import WEIGHT_FORMATS, Stored
from memlens.strategies.lora import linear_dims

_TORCH_DTYPES = {"fp32": torch.float32, "uint8": torch.uint8, "int8": torch.int8}


def _frozen(stored: Stored, device: torch.device) -> nn.Parameter:
    t = torch.empty(stored.shape, dtype=_TORCH_DTYPES[stored.dtype], device=device)
    return nn.Parameter(t, requires_grad=False)


class QuantLinear(nn.Module):
    """A linear layer whose weight is stored quantised (see the module docstring); ``shared``
    holds the format's tensors shared by all layers, by name."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: nn.Parameter | None,
        scheme: str,
        weight_dtype: torch.dtype,
        compute_dtype: torch.dtype,
        device: torch.device,
        shared: dict[str, nn.Parameter] | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.format = WEIGHT_FORMATS[scheme]
        self.weight_dtype, self.compute_dtype = weight_dtype, compute_dtype
        self.llm_int8 = self.format.layer == "Linear8bitLt"
        shape = (out_features, in_features)
        for stored in (self.format.payload(shape), *self.format.metadata(shape)):
            self.register_parameter(stored.name, _frozen(stored, device))
        for stored in self.format.shared:
            self.register_parameter(stored.name, (shared or {})[stored.name])
        self.bias = bias

    @property
    def linear_dims(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def logical_numel(self) -> int:
        """Elements of the weight it replaces (for parameter counts)."""
        return self.in_features * self.out_features

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as an ``out x in`` tensor of ``dtype`` (a new temporary)."""
        if self.llm_int8:  # MatMul8bitLt.backward's formula
            return self.weight.to(dtype, copy=True).mul_(self.scb.unsqueeze(1).mul(1.0 / 127.0))
        absmax = None
        if self.format.nested_block:  # dequantize_blockwise of the nested absmax, plus the offset
            absmax = torch.empty(self.absmax.shape, dtype=torch.float32, device=self.weight.device)
            absmax += self.offset
        out = torch.empty(
            self.out_features, self.in_features, dtype=self.weight_dtype, device=self.weight.device
        )
        del absmax  # read by the dequantisation kernel, freed when it returns
        return out.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.llm_int8:
            return _QuantMatmul.apply(x, self.bias, self)
        inp_dtype = x.dtype  # bnb.nn.Linear4bit.forward
        x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return _QuantMatmul.apply(x, bias, self).to(inp_dtype)


class _QuantMatmul(torch.autograd.Function):
    """``linear(x, dequantize(W), bias)`` that keeps only the quantised weight for backward
    (plus the input for int8, as ``MatMul8bitLt`` does)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, bias: torch.Tensor | None, layer: QuantLinear
    ) -> torch.Tensor:
        ctx.layer = layer
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x if layer.llm_int8 and ctx.needs_input_grad[0] else None)
        return F.linear(x, layer.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        layer: QuantLinear = ctx.layer
        grad_x = grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0, dtype=ctx.bias_dtype)
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(grad_out, layer.dequantize(grad_out.dtype))
        return grad_x, grad_bias, None


def quantize(
    model: nn.Module,
    scheme: str,
    *,
    skip: list[str],
    compute_dtype: torch.dtype,
) -> list[str]:
    """Replace the linear-like layers of ``model`` (except those under ``skip``) by
    :class:`QuantLinear`; returns their names."""
    hits = [
        (name, m)
        for name, m in model.named_modules()
        if name
        and linear_dims(m) is not None
        and not any(name == s or name.startswith(s + ".") for s in skip)
    ]
    shared: dict[str, nn.Parameter] = {}
    for name, module in hits:
        in_f, out_f = linear_dims(module)  # type: ignore[misc]
        weight = module.weight
        for stored in WEIGHT_FORMATS[scheme].shared:
            shared.setdefault(stored.name, _frozen(stored, weight.device))
        q = QuantLinear(
            in_f, out_f, module.bias, scheme, weight.dtype, compute_dtype, weight.device, shared
        )
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, q)
    return [name for name, _ in hits]


def logical_param_count(model: nn.Module) -> int:
    """Parameters of the model counted as the weights they stand for: a quantised layer
    counts its ``in x out`` weight, not its packed bytes and scales."""
    quantised = {
        id(p)
        for m in model.modules()
        if isinstance(m, QuantLinear)
        for n, p in m.named_parameters(recurse=False)
        if n != "bias"
    }
    plain = sum(p.numel() for p in model.parameters() if id(p) not in quantised)
    return plain + sum(m.logical_numel() for m in model.modules() if isinstance(m, QuantLinear))
