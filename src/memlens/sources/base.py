"""What every source produces: a :class:`ModelSpec` (how to build the model and its inputs)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by what builds and runs models, not to name them
    import torch
    from torch import nn

    from memlens.workload import Workload

#: How the default training loss is formed from the model's output.
#: - "classification": cross-entropy of each logits tensor against random class targets
#: - "next-token": cross-entropy of logits[:, :-1] against tokens shifted by one
#: - "model": the model computes its own loss (Hugging Face ``labels=``); use ``output.loss``
#: - "mean": mean of every floating-point output tensor (summed)
LOSS_KINDS = ("classification", "next-token", "model", "mean")


@dataclass
class Inputs:
    """Example inputs of one step: positional and keyword arguments, and loss targets."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    targets: torch.Tensor | None = None  # class ids or token ids, for the default losses

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the inputs hold (for accounting as the ``inputs`` category)."""
        import torch
        from torch.utils._pytree import tree_leaves

        leaves = tree_leaves((self.args, self.kwargs, self.targets))
        return [t for t in leaves if isinstance(t, torch.Tensor)]


@dataclass
class ModelSpec:
    """A model memlens can build without weights, plus how to feed it.

    ``build()`` constructs the module; the engine calls it under a fake-tensor mode with weight
    initialisation skipped, the measurer calls it for real. ``make_inputs(model, workload)``
    is called under the same mode as ``build``, so it must create tensors with plain factory
    functions (``torch.randn``, ``torch.randint``) and no ``device=``: they land on the
    current default device, which the engine or the measurer sets.
    """

    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[nn.Module, Workload], Inputs]
    family: str = "generic"  # vision, causal-lm, masked-lm, seq2seq, encoder, audio, generic
    source: str = "module"  # torchvision, timm, bundled, hf, factory, module
    loss_kind: str = "mean"
    metadata: dict[str, Any] = field(default_factory=dict)


_BUILDING: ContextVar[Workload | None] = ContextVar("memlens_building", default=None)


@contextlib.contextmanager
def building(workload: Workload) -> Iterator[None]:
    """While active, :func:`build_workload` is ``workload``: what a source's ``build()`` may
    read of the step it builds for (Hugging Face models pick their attention code at
    construction, from the ``attention`` option)."""
    token = _BUILDING.set(workload)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def build_workload() -> Workload | None:
    """The workload the model is being built for (None outside :func:`building`)."""
    return _BUILDING.get()
