"""What the engine asks of a workload's strategies: the :class:`StepStrategies` protocol.

The engine never imports :mod:`memlens.strategies`; the caller builds the strategies of a
workload and a target (:class:`memlens.strategies.apply.WorkloadStrategies`) and hands them to
:func:`memlens.engine.trace.trace`, which uses them, as the measurer does on real tensors,
through :func:`memlens.engine.step.run_step`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from memlens.sources.base import Inputs

#: Entered around the allocations that an offloaded optimizer makes in host memory.
HostRegion = Callable[[], contextlib.AbstractContextManager[Any]]
#: Entered around each forward pass that activation checkpointing recomputes in backward.
Recomputation = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class Applied:
    """What the strategies did to the model."""

    checkpoint: list[list[str]] = field(default_factory=list)  # module groups checkpointed
    frozen_params: int = 0  # elements frozen by ``freeze`` patterns
    lora_params: int = 0  # elements of the LoRA adapters
    quantized: list[str] = field(default_factory=list)  # names of the quantised layers


class StepStrategies(Protocol):
    """A workload's strategies for one target, applied identically to a fake and a real step."""

    def prepare(self, model: nn.Module, inputs: Inputs) -> Applied:
        """Cast to the storage precision, quantise, freeze, add adapters, set train/eval
        mode and resolve the checkpointed groups, in place."""
        ...

    def optimizer(self, params: list[nn.Parameter], host_region: HostRegion) -> Any:
        """The step's optimizer over ``params`` (a ``torch.optim.Optimizer``, or its
        host-offloaded variant, which enters ``host_region`` around host allocations)."""
        ...

    def is_fused(self, optimizer: Any) -> bool:
        """Whether the optimizer keeps its ``step`` counters on the device (fused kernels)."""
        ...

    def scaler(self, device_type: str) -> torch.amp.GradScaler | None:
        """The loss scaler of the step (``None`` without fp16 AMP training)."""
        ...

    def scaler_state(self, scaler: torch.amp.GradScaler | None) -> list[torch.Tensor]:
        """The tensors a scaler keeps across steps."""
        ...

    def target_kind(self) -> str:
        """The device kind the step stands for: ``"cpu"`` or ``"cuda"``."""
        ...

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """The autocast region of the forward pass and the loss (a no-op without AMP)."""
        ...

    def checkpointed(
        self, model: nn.Module, groups: list[list[str]], recomputation: Recomputation
    ) -> contextlib.AbstractContextManager[Any]:
        """While active, the module ``groups`` run under activation checkpointing; each
        recomputation in backward runs inside ``recomputation()``."""
        ...

    def param_count(self, model: nn.Module) -> int:
        """Parameters counted as the weights they stand for (quantised layers logically)."""
        ...

    def blocks(self, model: nn.Module) -> list[str]:
        """Dotted paths of the model's repeated blocks (what checkpointing can take)."""
        ...
