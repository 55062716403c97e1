"""A workload's strategies as the object the engine and the measurer call
(:class:`~memlens.engine.protocol.StepStrategies`), so that the fake model of a trace and the
real model of a measurement are prepared and stepped the same way."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from memlens._errors import WorkloadError
from memlens.engine.protocol import Applied, HostRegion, Recomputation
from memlens.sources.base import Inputs
from memlens.strategies import checkpointing, precision
from memlens.strategies.checkpointing import find_blocks, segments
from memlens.strategies.freezing import freeze, head_modules
from memlens.strategies.lora import apply_lora
from memlens.strategies.offload import OffloadedOptimizer
from memlens.strategies.optimizers import is_fused, make_optimizer
from memlens.strategies.precision import (
    bnb_compute_dtype,
    cast_floats,
    cast_module,
    storage_dtype,
)
from memlens.strategies.quantize import logical_param_count, quantize
from memlens.targets import Target
from memlens.workload import Workload


def prepare_model(model: nn.Module, inputs: Inputs, workload: Workload) -> Applied:
    """Cast to the storage precision, quantise, freeze, add LoRA adapters, set train/eval
    mode, and resolve the checkpointed blocks (in this order: adapters are created in the
    model's final precision, next to quantised base layers)."""
    dtype = storage_dtype(workload)
    if dtype is not None:
        cast_module(model, dtype)
        inputs.args = cast_floats(inputs.args, dtype)
        inputs.kwargs = cast_floats(inputs.kwargs, dtype)
    applied = Applied()
    if workload.quantize is not None:
        applied.quantized = quantize(
            model,
            workload.quantize,
            skip=head_modules(model),
            compute_dtype=bnb_compute_dtype(workload),
        )
    if workload.freeze:
        applied.frozen_params = freeze(model, workload.freeze)
    if workload.lora is not None:
        applied.lora_params = apply_lora(model, workload.lora, dtype or torch.float32)
    model.train(workload.training)
    if workload.training:
        if not any(p.requires_grad for p in model.parameters()):
            raise WorkloadError("freeze", ",".join(workload.freeze), "leaves nothing to train")
        applied.checkpoint = segments(model, workload.checkpoint)
    return applied


class WorkloadStrategies:
    """The strategies of ``workload`` on ``target`` (see
    :class:`~memlens.engine.protocol.StepStrategies`)."""

    def __init__(self, workload: Workload, target: Target) -> None:
        self.workload = workload
        self.target = target

    def prepare(self, model: nn.Module, inputs: Inputs) -> Applied:
        return prepare_model(model, inputs, self.workload)

    def optimizer(
        self, params: list[nn.Parameter], host_region: HostRegion = contextlib.nullcontext
    ) -> torch.optim.Optimizer | OffloadedOptimizer:
        """The workload's optimizer; ``auto`` is the target's default implementation. An
        offloaded optimizer runs its per-tensor loop on the host, as on any CPU."""
        name, impl = self.workload.optimizer, self.workload.optimizer_impl
        if self.workload.offload_optimizer:
            return OffloadedOptimizer(
                params,
                lambda masters: make_optimizer(name, masters, impl="for-loop"),
                host_region=host_region,
            )
        if self.workload.uses_fused_default:
            impl = "fused"  # the loop preset's default (hf-trainer: adamw_torch_fused)
        elif impl == "auto":
            impl = self.target.optimizer_impl
        return make_optimizer(name, params, impl=impl)

    def is_fused(self, optimizer: Any) -> bool:
        return is_fused(optimizer)

    def scaler(self, device_type: str) -> torch.amp.GradScaler | None:
        return precision.make_scaler(self.workload, device_type)

    def scaler_state(self, scaler: torch.amp.GradScaler | None) -> list[torch.Tensor]:
        return precision.scaler_state(scaler)

    def target_kind(self) -> str:
        return self.target.kind

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        return precision.autocast(self.workload, device_type)

    def checkpointed(
        self, model: nn.Module, groups: list[list[str]], recomputation: Recomputation
    ) -> contextlib.AbstractContextManager[Any]:
        return checkpointing.checkpointed(model, groups, recomputation)

    def param_count(self, model: nn.Module) -> int:
        return logical_param_count(model)

    def blocks(self, model: nn.Module) -> list[str]:
        return find_blocks(model)
