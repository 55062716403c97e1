"""Which module is running: forward via global module hooks, backward via gradient hooks.

Like ``torch.utils.module_tracker.ModuleTracker``, but it keeps dotted paths from the root
model and an ordered stack, so the innermost module is known. The user's modules are never
edited; every hook is removed on exit. Forward calls that activation checkpointing re-runs in
backward (the recorder knows when) register no backward hooks.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import _get_grad_fn_or_grad_acc
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)


def _grad_tensors(obj: Any) -> list[torch.Tensor]:
    leaves = torch.utils._pytree.tree_leaves(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]


#: The nodes of each wait of :func:`_after_grads` on several tensors, by token, while one of
#: its tensors lives. A hook that held them itself would make a cycle through the autograd
#: graph's C++ nodes (node -> its hook -> node) that Python's garbage collector cannot see.
_WAITING: dict[int, list[Any]] = {}
_TOKENS = itertools.count()


def _after_grads(tensors: list[torch.Tensor], fn: Callable[[], None]) -> None:
    """Call ``fn`` once backward has computed the gradient of each of ``tensors`` that it
    computes: ``torch.autograd.graph.register_multi_grad_hook(mode="all")`` without its buffer
    and without its reference cycle.

    The buffer keeps every gradient until the last one arrives: a Seq2Seq model's logits
    gradient waits there for the encoder output's, through the whole decoder backward, where a
    real run frees it once the LM head's backward has used it. Here each tensor hook only
    counts calls per graph task, against the nodes the engine will run
    (``torch._C._will_engine_execute_node``, as ``register_multi_grad_hook`` counts them).

    The hooks hold no node: ``register_multi_grad_hook``'s do, and an output that no backward
    runs through (GoogLeNet's auxiliary logits outside the loss) would then keep its graph's
    saved tensors alive after the loop drops it, where the real run frees them. The nodes are
    kept in :data:`_WAITING` while a tensor lives; once all are gone, the first hook of a
    graph task calls ``fn``.
    """
    if len(tensors) == 1:  # the one gradient has arrived when its hook runs
        tensors[0].register_hook(lambda _grad: fn())
        return
    token = next(_TOKENS)
    _WAITING[token] = [_get_grad_fn_or_grad_acc(t) for t in tensors]
    alive = [len(tensors)]

    def dead() -> None:
        alive[0] -= 1
        if alive[0] == 0:
            _WAITING.pop(token, None)

    pending: dict[int, int] = {}

    def hook(_grad: torch.Tensor) -> None:
        task = torch._C._current_graph_task_id()
        if task not in pending:
            nodes = _WAITING.get(token)
            pending[task] = sum(map(torch._C._will_engine_execute_node, nodes)) if nodes else 1
        pending[task] -= 1
        if pending[task] == 0:
            pending[task] = -1  # done for this task: later hooks of it do nothing
            fn()

    for t in tensors:
        weakref.finalize(t, dead).atexit = False
        t.register_hook(hook)


class ModuleStack:
    """Context manager tracking the stack of running modules of one root model;
    ``recomputing`` tells whether checkpointing is re-running a forward pass."""

    def __init__(self, root: nn.Module, recomputing: Callable[[], bool]) -> None:
        self._recomputing = recomputing
        self._names = {id(m): name for name, m in root.named_modules(remove_duplicate=False)}
        self._stack: list[str] = []
        self._handles: list[Any] = []

    @property
    def current(self) -> str:
        """Dotted path of the innermost running module ("" for the root or outside)."""
        return self._stack[-1] if self._stack else ""

    def reset(self) -> None:
        self._stack.clear()

    def _push(self, name: str) -> None:
        self._stack.append(name)

    def _pop(self, name: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i] == name:
                del self._stack[i]
                return

    def _records_backward(self) -> bool:
        """Whether this forward call will be backpropagated through. Activation
        checkpointing's recomputation builds a graph that backward never runs: a gradient hook
        on it would never fire, and would keep its tensors alive in a reference cycle."""
        return torch.is_grad_enabled() and not self._recomputing()

    def _pre(self, module: nn.Module, args: Any) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        self._push(name)
        if self._records_backward():
            tensors = _grad_tensors(args)
            if tensors:  # backward leaves the module once grads of its inputs exist
                _after_grads(tensors, lambda: self._pop(name))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        self._pop(name)
        if self._records_backward():
            tensors = _grad_tensors(output)
            if tensors:  # backward enters the module once grads of its outputs exist
                _after_grads(tensors, lambda: self._push(name))

    def __enter__(self) -> ModuleStack:
        self._handles = [
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._stack.clear()
