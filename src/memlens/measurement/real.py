"""Build a spec's model and inputs for real, on a real device, ready for :func:`run_step`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from memlens.engine.build import skip_init
from memlens.engine.step import LossFn, default_loss, make_optimizer, user_loss
from memlens.sources.base import Inputs, ModelSpec
from memlens.workload import Workload

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RealStep:
    """A real model, its inputs, loss and optimizer on ``device``."""

    model: nn.Module
    inputs: Inputs
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer | None
    device: torch.device


def _cast(inputs: Inputs, dtype: torch.dtype) -> None:
    def cast(a: object) -> object:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.to(dtype)
        return a

    inputs.args = tuple(cast(a) for a in inputs.args)
    inputs.kwargs = {k: cast(v) for k, v in inputs.kwargs.items()}


def build_real(
    spec: ModelSpec,
    workload: Workload,
    device: str,
    loss: Callable[..., torch.Tensor] | None = None,
) -> RealStep:
    """Build on ``device`` (weights left uninitialised: values never change memory)."""
    dev = torch.device(device)
    with dev, skip_init():
        model = spec.build()
    model.to(dev)
    with dev:
        inputs = spec.make_inputs(model, workload)
    dtype = _HALF.get(workload.precision)
    if dtype is not None:
        model.to(dtype)
        _cast(inputs, dtype)
    model.train(workload.training)
    optimizer = None
    if workload.training:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(workload.optimizer, params, foreach=dev.type == "cuda")
    loss_fn = user_loss(loss) if loss is not None else default_loss(spec.loss_kind)
    return RealStep(model, inputs, loss_fn, optimizer, dev)


def live_bytes(step: RealStep) -> int:
    """Bytes of the distinct storages alive before a step: parameters, buffers, inputs,
    optimizer state."""
    tensors: list[torch.Tensor] = [*step.model.parameters(), *step.model.buffers()]
    tensors += step.inputs.tensors()
    if step.optimizer is not None:
        for state in step.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    seen: dict[int, int] = {}
    for t in tensors:
        if t.device.type == step.device.type:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())
