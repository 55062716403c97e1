"""Build a spec's model and inputs for real, on a real device, ready for :func:`run_step`,
with the workload's strategies applied as the engine applies them to its fake model."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from memlens.engine.build import skip_init
from memlens.engine.protocol import Applied, StepStrategies
from memlens.engine.step import Carry, LossFn, default_loss, held_tensors, run_step, user_loss
from memlens.sources.base import Inputs, ModelSpec, building
from memlens.workload import Workload


@dataclass
class RealStep:
    """A real model, its inputs, loss, optimizer and strategies on ``device``."""

    model: nn.Module
    inputs: Inputs
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer | None
    device: torch.device
    strategies: StepStrategies
    scaler: torch.amp.GradScaler | None = None
    applied: Applied = field(default_factory=Applied)
    carry: Carry = field(default_factory=Carry)  # the loop's variables between steps

    def run(self, workload: Workload) -> None:
        """One step of ``workload``: what the engine traces (the previous step's output and
        loss alive until this one rebinds them)."""
        run_step(
            self.model,
            self.inputs,
            workload,
            self.loss_fn,
            self.optimizer,
            strategies=self.strategies,
            scaler=self.scaler,
            checkpoint=self.applied.checkpoint,
            carry=self.carry,
        )


def build_real(
    spec: ModelSpec,
    workload: Workload,
    strategies: StepStrategies,
    device: str,
    loss: Callable[..., torch.Tensor] | None = None,
) -> RealStep:
    """Build on ``device`` (weights left uninitialised: values never change memory) and
    apply the workload's strategies as the engine does."""
    dev = torch.device(device)
    with dev, skip_init(), building(workload):  # as the engine builds it (attention, cache)
        model = spec.build()
    if spec.source == "module":
        model = copy.deepcopy(model)  # the user's own instance: strategies must not touch it
    model.to(dev)
    with dev:
        inputs = spec.make_inputs(model, workload)
        applied = strategies.prepare(model, inputs)
    optimizer = scaler = None
    if workload.training:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = strategies.optimizer(params, contextlib.nullcontext)
        scaler = strategies.scaler(dev.type)
    loss_fn = user_loss(loss) if loss is not None else default_loss(spec.loss_kind)
    return RealStep(model, inputs, loss_fn, optimizer, dev, strategies, scaler, applied)


def _saved_by_graph(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors the autograd graphs of ``tensors`` still hold: a graph no backward ran
    through keeps its saved tensors (a model output the loss did not use, such as
    GoogLeNet's auxiliary logits, keeps its branch's activations while the loop holds it).
    Saved tensors a backward released cannot be read and are skipped."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                value = getattr(node, name)
            except (RuntimeError, AttributeError):  # released by a backward
                continue
            values = value if isinstance(value, (tuple, list)) else (value,)
            found += [v for v in values if isinstance(v, torch.Tensor)]
        stack += [fn for fn, _ in node.next_functions]
    return found


def live_bytes(step: RealStep) -> int:
    """Bytes of the distinct storages alive before a step: parameters, buffers, inputs,
    optimizer and loss-scaler state, gradients that outlive a step (``zero_grad`` that
    zeroes, or a user's step that zeroes them at its start), and the previous step's output
    and loss the loop still holds (:class:`~memlens.engine.step.Carry`)."""
    tensors: list[torch.Tensor] = [*step.model.parameters(), *step.model.buffers()]
    tensors += [p.grad for p in step.model.parameters() if p.grad is not None]
    tensors += step.inputs.tensors()
    if step.optimizer is not None:
        for state in step.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    tensors += step.strategies.scaler_state(step.scaler)
    carried = held_tensors((step.carry.output, step.carry.loss))
    tensors += carried + _saved_by_graph(carried)
    seen: dict[int, int] = {}
    for t in tensors:
        if t.device.type == step.device.type:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())
