"""One step of training or inference, shared by the engine (fake tensors) and the measurer
(real tensors), so that both run exactly the same code."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memlens._errors import ConfigError
from memlens.categories import Phase
from memlens.sources.base import Inputs
from memlens.workload import Workload

PhaseHook = Callable[[Phase | None], None]
LossFn = Callable[[Any, Inputs], torch.Tensor]


def _float_tensors(output: Any) -> list[torch.Tensor]:
    if hasattr(output, "to_tuple") and not isinstance(output, torch.Tensor):
        output = output.to_tuple()  # Hugging Face ModelOutput
    leaves = torch.utils._pytree.tree_leaves(output)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _logits(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "logits"):
        return [output.logits]
    return _float_tensors(output)


def default_loss(kind: str) -> LossFn:
    """The default training loss of a source's ``loss_kind``."""

    def classification(output: Any, inputs: Inputs) -> torch.Tensor:
        targets = inputs.targets
        if targets is None:
            raise ConfigError("classification loss needs targets")
        logits = [t for t in _logits(output) if t.dim() == 2 and t.shape[0] == targets.shape[0]]
        if not logits:
            return mean(output, inputs)
        loss = F.cross_entropy(logits[0], targets)
        for extra in logits[1:]:  # auxiliary heads (inception_v3, googlenet)
            loss = loss + F.cross_entropy(extra, targets)
        return loss

    def next_token(output: Any, inputs: Inputs) -> torch.Tensor:
        logits = _logits(output)[0]
        targets = inputs.targets
        if targets is None:
            raise ConfigError("next-token loss needs token targets")
        shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
        return F.cross_entropy(shifted, targets[:, 1:].reshape(-1))

    def model(output: Any, inputs: Inputs) -> torch.Tensor:
        loss = output["loss"] if isinstance(output, dict) else getattr(output, "loss", None)
        if loss is None:
            raise ConfigError("the model returned no loss: its inputs need labels")
        return loss

    def mean(output: Any, inputs: Inputs) -> torch.Tensor:
        tensors = _float_tensors(output)
        if not tensors:
            raise ConfigError("the model output has no floating-point tensor to take a loss of")
        loss = tensors[0].mean()
        for t in tensors[1:]:
            loss = loss + t.mean()
        return loss

    table = {
        "classification": classification,
        "next-token": next_token,
        "model": model,
        "mean": mean,
    }
    return table[kind]


def user_loss(fn: Callable[..., torch.Tensor]) -> LossFn:
    """Adapt a user's ``loss(output)`` or ``loss(output, targets)`` callable."""
    try:
        n = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n = 1
    if n >= 2:
        return lambda output, inputs: fn(output, inputs.targets)
    return lambda output, inputs: fn(output)


def make_optimizer(
    name: str, params: list[nn.Parameter], *, foreach: bool
) -> torch.optim.Optimizer:
    """The optimizer of a workload. ``foreach`` follows the target device's default
    (PyTorch picks the multi-tensor implementation for CUDA parameters, the per-tensor loop
    on CPU), since the two differ in temporaries."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3, foreach=foreach)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, foreach=foreach)
    raise ConfigError(f"unknown optimizer {name!r}")


def run_step(
    model: nn.Module,
    inputs: Inputs,
    workload: Workload,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer | None,
    on_phase: PhaseHook = lambda phase: None,
) -> None:
    """Forward (and for training: loss, backward, optimizer step, ``zero_grad(None)``).

    Outputs and the loss are locals: they are freed when the step returns, as in a loop
    that does not keep them across iterations.
    """
    if not workload.training:
        on_phase(Phase.FORWARD)
        with torch.no_grad():
            output = model(*inputs.args, **inputs.kwargs)
        on_phase(None)
        del output
        return
    on_phase(Phase.FORWARD)
    output = model(*inputs.args, **inputs.kwargs)
    on_phase(Phase.LOSS)
    loss = loss_fn(output, inputs)
    on_phase(Phase.BACKWARD)
    loss.backward()
    on_phase(Phase.OPTIMIZER)
    assert optimizer is not None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    on_phase(None)
    del output, loss
