"""Apply a workload's strategies to a freshly built model, the same way for the engine's
fake model and the measurer's real one."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from memlens._errors import WorkloadError
from memlens.sources.base import Inputs
from memlens.strategies.checkpointing import segments
from memlens.strategies.freezing import freeze, head_modules
from memlens.strategies.lora import apply_lora
from memlens.strategies.precision import cast_floats, cast_module, compute_dtype, storage_dtype
from memlens.strategies.quantize import quantize
from memlens.workload import Workload


@dataclass
class Applied:
    """What the strategies did to the model."""

    checkpoint: list[list[str]] = field(default_factory=list)  # module groups checkpointed
    frozen_params: int = 0  # elements frozen by ``freeze`` patterns
    lora_params: int = 0  # elements of the LoRA adapters
    quantized: list[str] = field(default_factory=list)  # names of the quantised layers


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
            compute_dtype=compute_dtype(workload),
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
