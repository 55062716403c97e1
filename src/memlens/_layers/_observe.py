"""One forward pass on fake tensors, watched per module: shapes, bytes, saved tensors, FLOPs.

Three observers run together, none of them editing the user's modules:

- global forward hooks record each module's calls, input and output shapes and bytes;
- ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves for
  backward; each storage is attributed once, to the innermost module running when it is
  *first* saved (parameters, buffers and inputs are not activations and are skipped);
- ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs per module (inclusive of
  submodules), with formulas for two CPU ops its registry lacks (:data:`EXTRA_FLOP_FORMULAS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode, bmm_flop, sdpa_flop_count

from memlens.engine.build import Built

aten = torch.ops.aten


def _native_mha_flop(query, key, value, embed_dim, num_heads, *args, out_shape=None, **kw) -> int:
    """``aten._native_multi_head_attention``, the fused op ``nn.MultiheadAttention`` runs in
    inference (its "fast path"): Q, K, V and output projections plus the attention itself."""
    b, s_q, d = query
    s_k = key[1]
    projections = bmm_flop((b, s_q, d), (b, d, d)) * 2 + bmm_flop((b, s_k, d), (b, d, d)) * 2
    q, kv = (b, num_heads, s_q, d // num_heads), (b, num_heads, s_k, d // num_heads)
    return projections + sdpa_flop_count(q, kv, kv)


def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu``: the two attention matmuls."""
    return sdpa_flop_count(query, key, value)


#: FLOP formulas for ops ``torch.utils.flop_counter`` has none for; merged per counter.
EXTRA_FLOP_FORMULAS: dict[Any, Any] = {
    aten._native_multi_head_attention: _native_mha_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
}


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
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    try:
        saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with built.mode, counter, saving, torch.set_grad_enabled(training):
            model(*inputs.args, **inputs.kwargs)
    finally:
        for h in handles:
            h.remove()
    flops = _by_path(model, counter.get_flop_counts())
    return Observation(
        calls=calls,
        flops=flops,
        own_flops=_exclusive(flops),
        total_flops=counter.get_total_flops(),
        saved_bytes_outside=outside,
    )


def _by_path(model: nn.Module, counts: dict[str, dict[Any, int]]) -> dict[str, int]:
    """FlopCounterMode's module names (``ResNet.layer1.0.conv1``) as dotted paths."""
    root = type(model).__name__
    out = {}
    for name, per_op in counts.items():
        if name == root:
            out[""] = sum(per_op.values())
        elif name.startswith(root + "."):
            out[name[len(root) + 1 :]] = sum(per_op.values())
    return out


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
