"""One step of training or inference, shared by the engine (fake tensors) and the measurer
(real tensors), so that both run exactly the same code; the workload's strategies come in as
a :class:`~memlens.engine.protocol.StepStrategies` object."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memlens._errors import ConfigError
from memlens.categories import Phase
from memlens.engine.protocol import Recomputation, StepStrategies
from memlens.sources.base import Inputs
from memlens.workload import Workload

PhaseHook = Callable[[Phase | None], None]
LossFn = Callable[[Any, Inputs], torch.Tensor]


@dataclass
class Carry:
    """What the loop around the step holds from one step into the next.

    A training loop binds the step's output and loss to loop variables (``pred =
    model(X); loss = loss_fn(pred, y)`` in PyTorch's tutorials, ``outputs = model(**batch)``
    in transformers'), and ``for`` does not free them: the previous step's output (logits,
    and a Hugging Face model's ``past_key_values`` when ``use_cache`` is on) stays alive
    through the next forward pass, freed when the new output is bound to the same name (its
    autograd graph was freed by ``backward``). A user's step function's return value is held
    the same way (``result = step(model, batch, optimizer)`` in the caller's loop). One
    :class:`Carry` per run of steps, shared by consecutive calls of :func:`run_step`.
    """

    output: Any = None
    loss: Any = None


def held_tensors(value: Any) -> list[torch.Tensor]:
    """The tensors ``value`` holds: inside containers, a Hugging Face ``ModelOutput`` and
    objects' attributes (a transformers ``Cache`` keeps its keys and values there)."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if v is None or isinstance(v, (str, bytes, int, float, bool)) or id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, dict):
            stack += v.values()
        elif isinstance(v, (list, tuple, set)):
            stack += v
        elif hasattr(v, "__dict__") and not isinstance(v, (type, nn.Module)):
            stack += vars(v).values()
    return found


def returned_cache(output: Any) -> list[torch.Tensor]:
    """The tensors of the key/value cache a Hugging Face model's forward returned
    (``past_key_values``, with ``use_cache`` on)."""
    cache = output.get("past_key_values") if isinstance(output, dict) else None
    return held_tensors(cache)


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


def _device_type(model: nn.Module, inputs: Inputs) -> str:
    for t in (*model.parameters(), *inputs.tensors()):
        return t.device.type
    return "cpu"


def user_batch(inputs: Inputs) -> Any:
    """The batch a user's step function receives: the inputs as the user gave them (one
    tensor, a tuple, or a dict of keyword arguments); a source's default inputs with loss
    targets are ``(*args, targets)``."""
    args, kwargs = inputs.args, inputs.kwargs
    if kwargs and not args:
        return kwargs
    if args and not kwargs:
        if inputs.targets is not None:
            return (*args, inputs.targets)
        return args[0] if len(args) == 1 else args
    return inputs


@contextlib.contextmanager
def _phases_of_user_step(optimizer: Any, on_phase: PhaseHook) -> Iterator[None]:
    """Mark the phases of a step the engine did not write: backward starts when
    ``torch.autograd.backward`` (``Tensor.backward``) or ``torch.autograd.grad`` is entered
    and ends when it returns; the optimizer phase starts when the optimizer's ``step`` is
    entered (``Optimizer.register_step_pre_hook``; a step called through a
    :class:`torch.amp.GradScaler` enters it too).

    Both autograd entry points are module attributes that ``Tensor.backward`` looks up at
    call time (``torch/_tensor.py``), so patching them catches every backward of the step.
    """
    depth = 0

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            depth += 1
            if depth == 1:
                on_phase(Phase.BACKWARD)
            try:
                return fn(*args, **kwargs)
            finally:
                depth -= 1
                if depth == 0:
                    on_phase(Phase.FORWARD)  # whatever follows is forward work until a step

        return wrapper

    handles = []
    patched_step = False
    if optimizer is not None:
        if hasattr(optimizer, "register_step_pre_hook"):
            handles.append(optimizer.register_step_pre_hook(lambda *_: on_phase(Phase.OPTIMIZER)))
        else:  # an offloaded optimizer: not a torch.optim.Optimizer
            inner_step = optimizer.step

            def step(*args: Any, **kwargs: Any) -> Any:
                on_phase(Phase.OPTIMIZER)
                return inner_step(*args, **kwargs)

            optimizer.step = step
            patched_step = True
    saved = torch.autograd.backward, torch.autograd.grad
    torch.autograd.backward, torch.autograd.grad = wrap(saved[0]), wrap(saved[1])
    try:
        yield
    finally:
        torch.autograd.backward, torch.autograd.grad = saved
        for h in handles:
            h.remove()
        if patched_step:
            del optimizer.step


@contextlib.contextmanager
def _autocast_on(device_type: str, alias: str) -> Iterator[None]:
    """While active, ``torch.autocast(alias, ...)`` (and ``torch.amp.autocast``) autocasts
    ``device_type`` instead: a user's step written for CUDA, run on the engine's CPU fake
    tensors, autocasts them (under the CUDA op lists that the target's emulation installs on
    CPU autocast, :mod:`memlens.engine.targets.cuda_autocast`) instead of warning that CUDA is
    unavailable and running in fp32."""
    original, traced = torch.amp.autocast, device_type

    class autocast(original):  # type: ignore[valid-type, misc]
        # ``device_type`` by keyword too, as transformers' rotary embeddings pass it
        def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
            if device_type == alias:
                device_type = traced
            super().__init__(device_type, *args, **kwargs)

    saved = torch.autocast, torch.amp.autocast
    torch.autocast = torch.amp.autocast = autocast  # type: ignore[misc]
    try:
        yield
    finally:
        torch.autocast, torch.amp.autocast = saved  # type: ignore[misc]


def _user_step(
    model: nn.Module,
    inputs: Inputs,
    workload: Workload,
    optimizer: Any,
    on_phase: PhaseHook,
    strategies: StepStrategies,
    carry: Carry,
) -> None:
    """The user's step function, called as ``fn(model, batch, optimizer)`` and traced as
    written (no autocast or loss scaling of memlens's: those are the function's own; a
    CUDA autocast region of a step traced for a CUDA target on CPU tensors autocasts them).
    What it returns is held until the next call returns (:class:`Carry`)."""
    assert workload.step is not None
    batch = user_batch(inputs)
    device_type, kind = _device_type(model, inputs), strategies.target_kind()
    aliased = (
        _autocast_on(device_type, kind)
        if device_type != kind and kind == "cuda"
        else contextlib.nullcontext()
    )
    on_phase(Phase.FORWARD)
    with _phases_of_user_step(optimizer, on_phase), aliased:
        carry.output = workload.step(model, batch, optimizer if workload.training else None)
    del batch
    on_phase(None)


def run_step(
    model: nn.Module,
    inputs: Inputs,
    workload: Workload,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer | None,
    on_phase: PhaseHook = lambda phase: None,
    *,
    strategies: StepStrategies,
    scaler: torch.amp.GradScaler | None = None,
    checkpoint: list[list[str]] | None = None,
    recomputation: Recomputation = contextlib.nullcontext,
    carry: Carry | None = None,
) -> None:
    """Forward (and for training: loss, backward, optimizer step, ``zero_grad``).

    The forward pass and the loss run under the workload's autocast (AMP). Training runs
    ``workload.grad_accum`` micro-batches of ``inputs``, each with its forward, loss (divided
    by the count) and backward, gradients accumulating in ``.grad``; the optimizer steps
    after the last (through ``scaler`` for fp16 AMP). ``checkpoint`` names the module groups
    run under activation checkpointing, whose recomputations run inside ``recomputation()``
    (the engine's recorder tells them apart). A training micro-batch's output and loss are
    the loop's variables, held in ``carry`` into the next step (or micro-batch) until they
    are rebound (:class:`Carry`); an inference forward's output is freed when it returns
    (one call, as ``estimate --inference`` reports it).

    The loop preset (``workload.preset``, see :class:`~memlens.workload.LoopPreset`) says
    whether the output is released before backward, whether ``zero_grad`` frees or zeroes
    the gradients and whether it runs after the optimizer step or (Lightning) between the
    first micro-batch's forward and its backward, and whether gradients are clipped before
    the step. ``workload.step`` replaces all of this with the user's own function.
    """
    carry = Carry() if carry is None else carry
    if workload.step is not None:
        with strategies.checkpointed(model, checkpoint or [], recomputation):
            _user_step(model, inputs, workload, optimizer, on_phase, strategies, carry)
        return
    amp = strategies.autocast(_device_type(model, inputs))
    if not workload.training:
        on_phase(Phase.FORWARD)
        with torch.no_grad(), amp:
            carry.output = model(*inputs.args, **inputs.kwargs)
        on_phase(None)
        carry.output = None  # one forward call: its output is freed when it returns
        return
    assert optimizer is not None
    preset = workload.preset
    set_to_none = preset.zero_grad == "free"
    with strategies.checkpointed(model, checkpoint or [], recomputation):
        for micro in range(workload.grad_accum):
            on_phase(Phase.FORWARD)
            with amp:
                # binding the new output frees the previous step's (alive until now)
                carry.output = model(*inputs.args, **inputs.kwargs)
                on_phase(Phase.LOSS)
                loss = loss_fn(carry.output, inputs)
                if workload.grad_accum > 1:
                    loss = loss / workload.grad_accum
                carry.loss = loss
            if preset.release_output:
                carry.output = None  # HF compute_loss returns only the loss; Lightning's: a local
            if preset.zero_grad_before_backward and micro == 0:
                optimizer.zero_grad(set_to_none=set_to_none)  # Lightning's closure
            on_phase(Phase.BACKWARD)
            (loss if scaler is None else scaler.scale(loss)).backward()
            if micro == workload.grad_accum - 1:
                on_phase(Phase.OPTIMIZER)
                if preset.clip_grad_norm is not None:
                    if scaler is not None:
                        scaler.unscale_(optimizer)  # accelerate's clip_grad_norm_ unscales
                    params = [p for p in model.parameters() if p.grad is not None]
                    torch.nn.utils.clip_grad_norm_(params, preset.clip_grad_norm)
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)
                    scaler.update()
                if not preset.zero_grad_before_backward:
                    optimizer.zero_grad(set_to_none=set_to_none)
                on_phase(None)
            del loss
