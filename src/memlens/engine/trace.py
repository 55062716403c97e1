"""Trace one step of a model on fake tensors into a :class:`Timeline`.

Training is traced at steady state: a warm-up step runs first (it creates the optimizer
state), then the next step is traced; the warm-up step's timeline is kept as
``first_step``. The trace follows the target device's behaviour where the two differ (see
:mod:`memlens.engine.rules` and :func:`memlens.engine.step.make_optimizer`).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from memlens.categories import Category, Phase
from memlens.engine import cpu_conv  # noqa: F401  (registers the CPU convolution rules)
from memlens.engine.build import Built, build_fake
from memlens.engine.cuda_attention import CudaAttention
from memlens.engine.modules import ModuleStack
from memlens.engine.recorder import Recorder, RecordingMode
from memlens.engine.rules import Rules, rules
from memlens.engine.step import default_loss, make_optimizer, run_step, user_loss
from memlens.sources.base import ModelSpec
from memlens.timeline import Timeline
from memlens.workload import Workload

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Trace:
    """What the engine found: the steady-state step and, for training, the first step."""

    timeline: Timeline
    first_step: Timeline | None
    num_params: int
    trainable_params: int
    value_reads: list[str] = field(default_factory=list)


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with tied ones counted once."""
    return list(model.parameters())  # nn.Module.parameters() already dedupes by identity


def prepare(built: Built, workload: Workload) -> None:
    """Cast to the workload's storage precision and set train/eval mode."""
    dtype = _HALF.get(workload.precision)
    with built.mode:
        if dtype is not None:
            built.model.to(dtype)
            built.inputs.args = tuple(
                a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                for a in built.inputs.args
            )
            built.inputs.kwargs = {
                k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                for k, v in built.inputs.kwargs.items()
            }
    built.model.train(workload.training)


def trace(
    spec: ModelSpec,
    workload: Workload,
    *,
    loss: Callable[..., torch.Tensor] | None = None,
    extra_rules: Rules | None = None,
    cuda_workspace_bytes: int = 0,
) -> Trace:
    """Run ``spec``'s model for one step of ``workload`` on fake tensors and record it."""
    built = build_fake(spec, workload)
    prepare(built, workload)
    model, inputs, mode = built.model, built.inputs, built.mode
    params = unique_parameters(model)
    trainable = [p for p in params if p.requires_grad]
    loss_fn = user_loss(loss) if loss is not None else default_loss(spec.loss_kind)

    modules = ModuleStack(model)
    recorder = Recorder(modules, rules(extra_rules), workload.device, cuda_workspace_bytes)
    for p in params:
        recorder.track(p, Category.PARAMETERS, "parameter")
    for b in model.buffers():
        recorder.track(b, Category.BUFFERS, "buffer")
    for t in inputs.tensors():
        recorder.track(t, Category.INPUTS, "input")

    optimizer = None
    if workload.training:
        with mode:
            optimizer = make_optimizer(
                workload.optimizer, trainable, foreach=workload.device == "cuda"
            )

    def on_phase(phase: Phase | None) -> None:
        if phase is Phase.BACKWARD:
            recorder.label_survivors(Phase.FORWARD, Category.ACTIVATIONS)
            recorder.label_survivors(Phase.LOSS, Category.ACTIVATIONS)
        elif phase is Phase.OPTIMIZER:
            for p in trainable:
                if p.grad is not None:
                    recorder.set_category(p.grad, Category.GRADIENTS)
        elif phase is None:
            if workload.training:
                _label_optimizer_state(recorder, optimizer, workload.device)
            else:
                recorder.label_survivors(Phase.FORWARD, Category.ACTIVATIONS)
        if phase is not None:
            recorder.set_phase(phase)

    first_step = None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # frees happen when references drop, not when the collector runs
    try:
        attention = CudaAttention() if workload.device == "cuda" else contextlib.nullcontext()
        with mode, modules, RecordingMode(recorder), attention:
            run_step(model, inputs, workload, loss_fn, optimizer, on_phase)
            if workload.training:
                first_step = recorder.new_timeline()
                run_step(model, inputs, workload, loss_fn, optimizer, on_phase)
        timeline = recorder.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    if not workload.training:
        _label_inference_activations(timeline)
    return Trace(
        timeline=timeline,
        first_step=first_step,
        num_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in trainable),
        value_reads=recorder.value_reads,
    )


def _label_optimizer_state(
    recorder: Recorder, optimizer: torch.optim.Optimizer | None, device: str
) -> None:
    if optimizer is None:
        return
    for state in optimizer.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key == "step" and device == "cuda" and value.dim() == 0:
                # Without capturable/fused, CUDA optimizers keep `step` on the host.
                recorder.set_host(value)
            else:
                recorder.set_category(value, Category.OPTIMIZER_STATE)


def _label_inference_activations(timeline: Timeline) -> None:
    """In inference every forward op output is an activation (no backward to save for)."""
    for block in timeline.blocks:
        forward_temp = block.phase is Phase.FORWARD and block.category is Category.TEMPORARIES
        if forward_temp and not block.op.endswith(":workspace"):
            block.category = Category.ACTIVATIONS
