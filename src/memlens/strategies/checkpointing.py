"""Activation checkpointing of the model's own repeated blocks.

The blocks are found structurally (:func:`find_blocks`): the module type repeated most
often among the children of one ``nn.ModuleList`` / ``nn.Sequential`` (ResNet's
``BasicBlock``/``Bottleneck`` in ``layer1..4``, a transformer's layers), and every child of
such a container of that type. A policy (:func:`segments`) picks which are checkpointed:

- ``blocks``: every block, each on its own;
- ``every-k:K``: blocks ``0, K, 2K, ...``;
- ``sqrt``: Chen et al. 2016: segments of ``ceil(sqrt(n))`` consecutive blocks of one
  container, each segment checkpointed as a whole (only segment inputs are kept);
- ``modules:A,B``: the named modules (what ``auto`` resolves to, see
  :func:`memlens.estimate`).

:func:`checkpointed` patches ``forward`` on those module instances (undone on exit) so that
they run under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the step
then really drops the blocks' activations and recomputes them in backward, in both the trace
and the real run. Each recomputation runs inside the caller's ``recomputation()`` context
(the engine's recorder counts recomputed FLOPs and skips backward hooks there). A segment's
first block runs the whole segment; the others hand back its output. This assumes, as every
``nn.Sequential`` and transformer layer loop does, that each block of a segment takes the
previous one's output as its first argument with the same other arguments. Key/value caches
are dropped from a checkpointed block's arguments (as transformers does), and the
recomputation runs under the torch-function modes of the forward call, which autograd does
not carry into backward (the engine's CUDA attention).

Known limitations: each checkpoint keeps the CPU RNG state (``torch.get_rng_state()``, about
5 KiB) until its recomputation; it is made outside the dispatcher, so a CPU-target trace
misses those few KiB per checkpointed block (on CUDA they are host memory).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import _get_current_function_mode_stack
from torch.utils.checkpoint import _StopRecomputationError, checkpoint

from memlens._errors import WorkloadError

_CONTAINERS = (nn.ModuleList, nn.Sequential)
#: Entered around each recomputed forward pass.
Recomputation = Callable[[], contextlib.AbstractContextManager[Any]]


def find_blocks(model: nn.Module) -> list[str]:
    """Dotted paths of the model's repeated blocks, in registration order."""
    best: tuple[tuple[int, int], type] | None = None
    for _, container in model.named_modules():
        if not isinstance(container, _CONTAINERS):
            continue
        children = list(container.children())
        for typ, count in Counter(type(c) for c in children).items():
            params = sum(p.numel() for c in children if type(c) is typ for p in c.parameters())
            if count >= 2 and params and (best is None or (count, params) > best[0]):
                best = ((count, params), typ)
    if best is None:
        return []
    typ = best[1]
    blocks = [
        f"{name}.{child}" if name else child
        for name, container in model.named_modules()
        if isinstance(container, _CONTAINERS)
        for child, module in container.named_children()
        if type(module) is typ
    ]
    return [b for b in blocks if not any(b.startswith(o + ".") for o in blocks)]


def segments(model: nn.Module, policy: str) -> list[list[str]]:
    """The groups of modules checkpointed together under ``policy`` (``[]`` for ``none``)."""
    if policy == "none":
        return []
    if policy.startswith("modules:"):
        names = policy.split(":", 1)[1].split(",")
        for name in names:
            try:
                model.get_submodule(name)
            except AttributeError:
                blocks = ", ".join(find_blocks(model)[:4])
                raise WorkloadError(
                    "checkpoint", name, f"is not a module of the model (blocks: {blocks}, ...)"
                ) from None
        return [[n] for n in names]
    blocks = find_blocks(model)
    if not blocks:
        raise WorkloadError("checkpoint", policy, "the model has no repeated blocks to checkpoint")
    if policy == "blocks":
        return [[b] for b in blocks]
    if policy.startswith("every-k:"):
        k = int(policy.split(":", 1)[1])
        return [[b] for b in blocks[::k]]
    if policy == "sqrt":
        size = math.ceil(math.sqrt(len(blocks)))
        out: list[list[str]] = []
        for b in blocks:
            parent = b.rpartition(".")[0]
            if out and len(out[-1]) < size and out[-1][0].rpartition(".")[0] == parent:
                out[-1].append(b)
            else:
                out.append([b])
        return out
    raise WorkloadError("checkpoint", policy, "auto must be resolved against a device budget")


def _is_cache(obj: Any) -> bool:
    """A key/value cache object (transformers' ``Cache`` and its subclasses)."""
    return any(c.__name__.endswith("Cache") for c in type(obj).__mro__)


def _no_cache(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """The arguments without a key/value cache: a recomputation would append to it a second
    time, so checkpointed blocks run without it, as transformers' ``GradientCheckpointingLayer``
    does."""
    args = tuple(None if _is_cache(a) else a for a in args)
    kwargs = {k: None if _is_cache(v) else v for k, v in kwargs.items()}
    if kwargs.get("use_cache"):
        kwargs["use_cache"] = False
    return args, kwargs


def _first(output: Any) -> Any:
    return output if isinstance(output, torch.Tensor) else output[0]


class _Segment:
    """Consecutive blocks checkpointed as one function."""

    def __init__(self, modules: list[nn.Module], recomputation: Recomputation) -> None:
        self.modules = modules
        self.recomputation = recomputation
        self.originals = [m.forward for m in modules]
        self.running = False
        self.output: Any = None
        self.modes: list[Any] = []  # torch-function modes active at the forward call

    def run(self, *args: Any, **kwargs: Any) -> Any:
        recompute = torch._C._current_graph_task_id() != -1  # called by the backward pass
        self.running = True
        try:
            with contextlib.ExitStack() as modes:
                if recompute:  # autograd runs backward without the forward's function modes
                    modes.enter_context(self.recomputation())
                    for mode in self.modes:
                        modes.enter_context(mode)
                return self._chain(*args, **kwargs)
        except _StopRecomputationError as stop:
            # Early stopping ends a recomputation with this exception; its traceback would
            # keep the recomputed tensors of these frames alive until a garbage collection.
            raise stop.with_traceback(None) from None
        finally:
            self.running = False

    def _chain(self, *args: Any, **kwargs: Any) -> Any:
        out = self.modules[0](*args, **kwargs)
        for module in self.modules[1:]:
            out = module(_first(out), *args[1:], **kwargs)
        return out

    def forward_of(self, index: int) -> Any:
        original = self.originals[index]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.running:
                return original(*args, **kwargs)
            if index == 0:
                self.modes = _get_current_function_mode_stack()
                args, kwargs = _no_cache(args, kwargs)
                out = checkpoint(self.run, *args, use_reentrant=False, **kwargs)
                self.output = out if len(self.modules) > 1 else None
                return out
            out = self.output
            if index == len(self.modules) - 1:
                self.output = None
            return out

        return forward


@contextmanager
def checkpointed(
    model: nn.Module,
    groups: list[list[str]],
    recomputation: Recomputation = contextlib.nullcontext,
) -> Iterator[None]:
    """Run the modules of each group under non-reentrant checkpointing (patches undone on
    exit); each recomputation in backward runs inside ``recomputation()``."""
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for names in groups:
            segment = _Segment([model.get_submodule(n) for n in names], recomputation)
            for i, module in enumerate(segment.modules):
                saved.append((module, module.__dict__.get("forward")))
                module.forward = segment.forward_of(i)  # type: ignore[method-assign]
        yield
    finally:
        for module, previous in reversed(saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous  # type: ignore[method-assign]
