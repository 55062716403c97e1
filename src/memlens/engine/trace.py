"""Trace one step of a model on fake tensors into a :class:`Timeline`.

Training is traced at steady state: a warm-up step runs first (it creates the optimizer
state, and its output and loss are the loop's variables the traced step starts with:
:class:`~memlens.engine.step.Carry`), then the next step is traced; the warm-up step's
timeline is kept as ``first_step``. The trace follows the target's behaviour where it
differs from the CPU's (its kernel rules, attention kernels and autocast lists:
:mod:`memlens.engine.targets`).
The workload's strategies come in as a :class:`~memlens.engine.protocol.StepStrategies`
object, applied to the fake model exactly as the measurer applies them to the real one.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from memlens.categories import Category, Phase
from memlens.engine.build import build_fake, call_user
from memlens.engine.protocol import Applied, StepStrategies
from memlens.engine.recorder import Recorder, RecordingMode
from memlens.engine.rules import Rules
from memlens.engine.shadow import Read, Reads
from memlens.engine.step import Carry, default_loss, returned_cache, run_step, user_loss
from memlens.engine.targets.emulation import emulated, kernel_rules
from memlens.sources.base import ModelSpec
from memlens.targets import Target
from memlens.timeline import Timeline
from memlens.workload import Workload


@dataclass
class Trace:
    """What the engine found: the steady-state step and, for training, the first step."""

    timeline: Timeline
    first_step: Timeline | None
    num_params: int
    trainable_params: int
    reads: list[Read] = field(default_factory=list)  # data-dependent reads, with their answers
    routed: list[str] = field(default_factory=list)  # MoE routers routed by the policy
    branches: dict | None = None  # what explore found (memlens.engine.explore.Branches)
    applied: Applied = field(default_factory=Applied)
    flops: int = 0  # FLOPs of the traced step (memlens.engine.flops)
    recompute_flops: int = 0  # of which: forward ops re-run by activation checkpointing
    blocks: list[str] = field(default_factory=list)  # the model's repeated blocks
    host_peak_bytes: int = 0  # host memory of an offloaded optimizer, at its peak
    families: frozenset[str] = frozenset()  # layer families whose kernels differ by device


def layer_families(model: torch.nn.Module) -> frozenset[str]:
    """The model's layer families whose kernels differ between devices beyond what the CPU
    trace shows: ``recurrent`` (``nn.RNNBase``: cuDNN's RNN on CUDA) and ``torch-transformer``
    (``nn.TransformerEncoderLayer``, ``nn.MultiheadAttention``: fused kernels in eval)."""
    nn = torch.nn
    out = set()
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            out.add("recurrent")
        elif isinstance(m, (nn.TransformerEncoderLayer, nn.MultiheadAttention)):
            out.add("torch-transformer")
    return frozenset(out)


def trace(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    strategies: StepStrategies,
    *,
    loss: Callable[..., torch.Tensor] | None = None,
    extra_rules: Rules | None = None,
    flipped: str | None = None,
) -> Trace:
    """Run ``spec``'s model for one step of ``workload`` on fake tensors, as ``target`` runs
    it, with the workload's ``strategies``, and record it.

    Data-dependent reads are answered under ``workload.data_dependent``, the reads at the
    ``flipped`` site (``file:line``) with their other answer (:class:`Reads`). MoE routers
    route by ``workload.moe_routing``; the warm-up step routes ``balanced``, so that every
    expert has optimizer state, as after any number of real steps."""
    built = build_fake(spec, workload)
    model, inputs, mode = built.model, built.inputs, built.mode
    with mode:
        applied = strategies.prepare(model, inputs)
    named = dict(model.named_parameters())  # tied parameters once: the first name
    params = list(named.values())
    trainable = [p for p in params if p.requires_grad]
    loss_fn = user_loss(loss) if loss is not None else default_loss(spec.loss_kind)

    reads = Reads(workload.data_dependent, flipped)
    recorder = Recorder(model, kernel_rules(target, extra_rules), target, reads)
    for fake, real in built.real_inputs:
        recorder.shadows.seed(fake, real)
    modules = recorder.modules
    for name, p in named.items():
        recorder.track(p, Category.PARAMETERS, "parameter", name.rpartition(".")[0])
    for name, b in model.named_buffers():
        recorder.track(b, Category.BUFFERS, "buffer", name.rpartition(".")[0])
    for t in inputs.tensors():
        recorder.track(t, Category.INPUTS, "input")

    optimizer = scaler = None
    if workload.training:
        with mode:
            optimizer = strategies.optimizer(trainable, recorder.host)
            scaler = strategies.scaler("cpu")  # the fake tensors are CPU tensors

    carry = Carry()  # the loop's variables, from the warm-up step into the traced one

    def label_gradients() -> None:
        for p in trainable:
            if p.grad is not None:
                recorder.set_category(p.grad, Category.GRADIENTS)

    def on_phase(phase: Phase | None) -> None:
        if phase is Phase.BACKWARD:
            recorder.label_survivors(Phase.FORWARD, Category.ACTIVATIONS)
            recorder.label_survivors(Phase.LOSS, Category.ACTIVATIONS)
        elif phase in (Phase.OPTIMIZER, Phase.FORWARD):
            label_gradients()  # with gradient accumulation they live across micro-batches
        elif phase is None:
            if workload.training:
                _label_optimizer_state(recorder, optimizer, scaler, strategies, target)
            else:
                recorder.label_survivors(Phase.FORWARD, Category.ACTIVATIONS)
                for t in returned_cache(carry.output):  # use_cache on: the returned cache
                    recorder.set_category(t, Category.KV_CACHE)
        if phase is not None:
            recorder.set_phase(phase)

    def step() -> None:
        run_step(
            model,
            inputs,
            workload,
            loss_fn,
            optimizer,
            on_phase,
            strategies=strategies,
            scaler=scaler,
            checkpoint=applied.checkpoint,
            recomputation=recorder.recomputation,
            carry=carry,
        )

    first_step = None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # frees happen when references drop, not when the collector runs
    try:
        with (
            mode,
            RecordingMode(recorder),
            emulated(target, amp=workload.amp, attention=workload.attention),
        ):
            if workload.training:
                # The warm-up step is kept only for its peak bytes: no module attribution or
                # FLOP counting, which cost about a tenth of a step's trace.
                recorder.counting_flops = False
                call_user("the step", step)
                recorder.counting_flops = True
                first_step = recorder.new_timeline()
            recorder.routing = workload.moe_routing
            with modules:
                call_user("the step", step)
        timeline = recorder.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    if not workload.training:
        _label_inference_activations(timeline)
    return Trace(
        timeline=timeline,
        first_step=first_step,
        num_params=strategies.param_count(model),
        trainable_params=sum(p.numel() for p in trainable),
        reads=reads.log,
        routed=recorder.routed,
        applied=applied,
        flops=recorder.flops,
        recompute_flops=recorder.recompute_flops,
        blocks=strategies.blocks(model) if workload.training else [],
        host_peak_bytes=recorder.host_peak,
        families=layer_families(model),
    )


def _label_optimizer_state(
    recorder: Recorder,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None,
    strategies: StepStrategies,
    target: Target,
) -> None:
    if optimizer is None:
        return
    host_steps = target.kind == "cuda" and not strategies.is_fused(optimizer)
    for state in optimizer.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key == "step" and host_steps and value.dim() == 0:
                # Without capturable/fused, CUDA optimizers keep `step` on the host.
                recorder.set_host(value)
            else:
                recorder.set_category(value, Category.OPTIMIZER_STATE)
    for value in strategies.scaler_state(scaler):
        recorder.set_category(value, Category.OPTIMIZER_STATE)


def _label_inference_activations(timeline: Timeline) -> None:
    """In inference every forward op output is an activation (no backward to save for)."""
    for block in timeline.blocks:
        forward_temp = block.phase is Phase.FORWARD and block.category is Category.TEMPORARIES
        if forward_temp and not block.op.endswith(":workspace"):
            block.category = Category.ACTIVATIONS
