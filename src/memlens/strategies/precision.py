"""Precision policies: pure half precision, or autocast (AMP) with fp32 master weights.

- ``bf16`` / ``fp16``: parameters, buffers and floating-point inputs are stored in half
  precision; so are gradients and optimizer state, which follow their parameters.
- ``bf16-amp`` / ``fp16-amp``: parameters stay fp32 (so do gradients and optimizer state);
  the forward pass and the loss run under the real :func:`torch.autocast`, so which ops run
  in half precision, and which casts autograd keeps for backward, is PyTorch's own decision.
  ``fp16-amp`` adds a :class:`torch.amp.GradScaler` (its scale and growth-tracker tensors,
  the scaled loss, the unscale step's ``found_inf`` and inverse scale).

Autocast's op lists differ between devices (CUDA runs ``softmax``, ``layer_norm`` and the
losses in fp32; CPU keeps them in half precision). The engine runs on CPU fake tensors
under CPU autocast; for a target with CUDA's lists it switches CPU autocast to them
(:mod:`memlens.engine.targets.cuda_autocast`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from memlens.workload import Workload

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def storage_dtype(workload: Workload) -> torch.dtype | None:
    """The dtype parameters are cast to (``None``: they stay fp32)."""
    return _DTYPES.get(workload.precision)


def compute_dtype(workload: Workload) -> torch.dtype:
    """The dtype matrix multiplications run in."""
    return _DTYPES.get(workload.precision.removesuffix("-amp"), torch.float32)


def bnb_compute_dtype(workload: Workload) -> torch.dtype:
    """The compute dtype of bitsandbytes 4-bit layers: ``workload.bnb_compute_dtype``, whose
    default follows transformers' ``BitsAndBytesConfig`` (``bnb_4bit_compute_dtype=None``
    becomes ``torch.float32``, ``transformers/utils/quantization_config.py``), so a bf16
    model's 4-bit layers upcast their input to fp32 unless the user sets it."""
    return _DTYPES.get(workload.bnb_compute_dtype, torch.float32)


def cast_module(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating-point parameters and buffers to ``dtype`` in place, ties preserved.

    Unlike ``model.to(dtype)`` this never swaps tensors, which fake tensors refuse once a
    weak reference to them exists.
    """
    memo: dict[int, torch.Tensor] = {}

    def cast(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            new = t.detach().to(dtype) if t.is_floating_point() else t
            if isinstance(t, nn.Parameter) and new is not t:
                new = nn.Parameter(new, t.requires_grad)
            memo[id(t)] = new
        return memo[id(t)]

    for sub in model.modules():
        for key, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[key] = cast(p)  # type: ignore[assignment]
        for key, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[key] = cast(b)


def cast_floats(obj: Any, dtype: torch.dtype) -> Any:
    """``obj`` (a pytree) with its floating-point tensors cast to ``dtype``."""

    def cast(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.to(dtype)
        return a

    return torch.utils._pytree.tree_map(cast, obj)


def autocast(workload: Workload, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast region of the forward pass and the loss (a no-op without AMP)."""
    if not workload.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=compute_dtype(workload))


class StepScaler(torch.amp.GradScaler):
    """A :class:`torch.amp.GradScaler` whose ``step`` always runs the optimizer.

    ``GradScaler`` skips the optimizer step when the unscaled gradients hold an inf or a
    NaN; the memory of a step is that of the step without overflow, and fake tensors hold
    no values to check, so both the trace and the real run take that branch.
    """

    def _maybe_opt_step(  # type: ignore[override]
        self,
        optimizer: torch.optim.Optimizer,
        optimizer_state: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return optimizer.step(*args, **kwargs)


def make_scaler(workload: Workload, device_type: str) -> StepScaler | None:
    """The loss scaler of ``fp16-amp`` training (``None`` otherwise)."""
    if not (workload.training and workload.precision == "fp16-amp"):
        return None
    return StepScaler(device_type)


def scaler_state(scaler: torch.amp.GradScaler | None) -> list[torch.Tensor]:
    """The loss scale and growth tracker a ``GradScaler`` keeps across steps."""
    if scaler is None:
        return []
    values = (getattr(scaler, "_scale", None), getattr(scaler, "_growth_tracker", None))
    return [v for v in values if isinstance(v, torch.Tensor)]
