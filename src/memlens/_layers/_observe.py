"""One forward pass on fake tensors, watched per module: shapes, bytes, saved tensors, FLOPs.

Three observers run together, none of them editing the user's modules:

- global forward hooks record each module's calls, input and output shapes and bytes;
- ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves for
  backward; each storage is attributed once, to the innermost module running when it is
  *first* saved (parameters, buffers and inputs are not activations and are skipped);
- a dispatch mode counts each op's FLOPs with the engine's table
  (:func:`memlens.engine.flops.count_flops`: the ops an estimate counts, counted the same
  way) for every module running (inclusive of submodules) and in total. It answers
  data-dependent reads (``.item()``, ``if tensor:``) as the engine does: with the value of
  the tensor's real shadow (:mod:`memlens.engine.shadow`) if it has one, else a neutral value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from memlens.engine.build import Built
from memlens.engine.flops import count_flops
from memlens.engine.shadow import Shadows
from memlens.engine.targets.cpu_rnn_native import NativeRNN

aten = torch.ops.aten


@dataclass
class ModuleCalls:
    """What one module did during the forward pass."""

    order: int  # position of its first call among all module calls
    calls: int = 0
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)  # first call
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)  # first call
    output_bytes: int = 0  # summed over calls
    io_bytes: int = 0  # the largest input + output bytes of one call
    saved_bytes: int = 0  # first saved here, for backward


@dataclass
class Observation:
    """Per-module records (by dotted path) and inclusive FLOPs."""

    calls: dict[str, ModuleCalls]
    flops: dict[str, int]  # inclusive of submodules
    own_flops: dict[str, int]  # outside every submodule that ran
    total_flops: int
    saved_bytes_outside: int  # saved while no module of the model was running


def tensors_of(obj: Any) -> list[torch.Tensor]:
    """Distinct tensors in a (possibly nested) module input or output."""
    if hasattr(obj, "to_tuple") and not isinstance(obj, torch.Tensor):
        obj = obj.to_tuple()  # Hugging Face ModelOutput
    leaves = torch.utils._pytree.tree_leaves(obj)
    unique = {id(t): t for t in leaves if isinstance(t, torch.Tensor)}
    return list(unique.values())


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def observe(built: Built, training: bool) -> Observation:
    """Run ``built``'s model forward once (with autograd if ``training``) and watch it."""
    model, inputs = built.model, built.inputs
    names = {id(m): name for name, m in model.named_modules()}
    calls: dict[str, ModuleCalls] = {}
    stack: list[str] = []
    order = iter(range(1 << 62))
    pending_inputs: list[list[torch.Tensor]] = []

    def pre(module: nn.Module, args: Any) -> None:
        name = names.get(id(module))
        if name is None:
            return
        stack.append(name)
        rec = calls.get(name)
        if rec is None:
            rec = calls[name] = ModuleCalls(order=next(order))
        ins = tensors_of(args)
        if rec.calls == 0:
            rec.input_shapes = [tuple(t.shape) for t in ins]
        pending_inputs.append(ins)

    def post(module: nn.Module, args: Any, output: Any) -> None:
        name = names.get(id(module))
        if name is None:
            return
        if stack and stack[-1] == name:
            stack.pop()
        rec = calls[name]
        outs = tensors_of(output)
        if rec.calls == 0:
            rec.output_shapes = [tuple(t.shape) for t in outs]
        rec.calls += 1
        out_bytes = _nbytes(outs)
        rec.output_bytes += out_bytes
        ins = pending_inputs.pop() if pending_inputs else []
        rec.io_bytes = max(rec.io_bytes, _nbytes(ins) + out_bytes)

    # Storages are compared by id; holding them keeps the ids from being reused meanwhile.
    keep_alive = [t.untyped_storage() for t in [*model.parameters(), *model.buffers()]]
    keep_alive += [t.untyped_storage() for t in inputs.tensors()]
    not_activations = {id(s) for s in keep_alive}
    seen_saved: set[int] = set()
    outside = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal outside
        storage = t.untyped_storage()
        key = id(storage)
        if key in not_activations or key in seen_saved:
            return t
        seen_saved.add(key)
        keep_alive.append(storage)
        if stack:
            calls[stack[-1]].saved_bytes += storage.nbytes()
        else:
            outside += storage.nbytes()
        return t

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    counter = _FlopCounter(stack)
    try:
        saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        native = NativeRNN()  # recurrent layers and packed sequences as ATen runs them
        with built.mode, counter, native, saving, torch.set_grad_enabled(training):
            model(*inputs.args, **inputs.kwargs)
    finally:
        for h in handles:
            h.remove()
    return Observation(
        calls=calls,
        flops=counter.by_module,
        own_flops=_exclusive(counter.by_module),
        total_flops=counter.total,
        saved_bytes_outside=outside,
    )


class _FlopCounter(TorchDispatchMode):
    """FLOPs of every op, added to each module on ``stack`` (the modules running)."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.by_module: dict[str, int] = {}  # inclusive of submodules
        self.total = 0
        self.shadows = Shadows()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            return self._read(args[0])
        out = func(*args, **kwargs)
        self.shadows.propagate(func, args, kwargs, out)
        n = count_flops(func, args, kwargs, out)
        if n:
            self.total += n
            for name in set(self.stack):
                self.by_module[name] = self.by_module.get(name, 0) + n
        return out

    def _read(self, t: torch.Tensor) -> Any:
        """A scalar read of a tensor without data: its shadow's value, else neutral."""
        real = self.shadows.get(t)
        if real is None:
            real = getattr(t, "constant", None)
        if real is not None:
            with _disable_current_modes():
                return real.item()
        if t.dtype == torch.bool:
            return True  # masks are all ones, asserts hold
        return 1.0 if t.is_floating_point() else 1


def _exclusive(inclusive: dict[str, int]) -> dict[str, int]:
    """Each module's FLOPs minus those of its nearest counted descendants (a ``ModuleList``
    never runs, so its blocks count towards the module above it)."""
    own = dict(inclusive)
    for path, n in inclusive.items():
        parent = path
        while parent:
            parent = parent.rpartition(".")[0]
            if parent in inclusive:
                own[parent] -= n
                break
    return own
