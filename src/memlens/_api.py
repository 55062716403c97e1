"""The Python API: every CLI command has a twin here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memlens._estimate import make_workload
from memlens.devices import resolve_device
from memlens.measurement import Measurement, measure_spec
from memlens.plan import fit, sweep
from memlens.sources.registry import resolve
from memlens.workload import LoraConfig

__all__ = ["fit", "measure", "sweep"]


def measure(
    model: Any,
    *,
    inputs: Any = None,
    task: str | None = None,
    trust_remote_code: bool = False,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    batch: int | None = None,
    optimizer: str = "adam",
    device: str = "cuda",
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    checkpoint: str = "none",
    freeze: str | tuple[str, ...] = (),
    lora: str | dict[str, Any] | LoraConfig | None = None,
    quantize: str | None = None,
    optimizer_impl: str = "auto",
    grad_accum: int = 1,
    offload_optimizer: bool = False,
    **options: Any,
) -> Measurement:
    """Run one steady-state step of ``model`` for real and measure it (same arguments as
    :func:`memlens.estimate`; ``device`` is ``"cpu"`` or ``"cuda"``; ``checkpoint="auto"``
    needs a budget: measure the ``modules:...`` an estimate chose instead)."""
    kind, _ = resolve_device(device, None)
    workload = make_workload(
        mode=mode,
        batch=batch,
        input_shape=input_shape,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        device=kind,
        checkpoint=checkpoint,
        freeze=freeze,
        lora=lora,
        quantize=quantize,
        optimizer_impl=optimizer_impl,
        grad_accum=grad_accum,
        offload_optimizer=offload_optimizer,
        **options,
    )
    return measure_spec(
        resolve(model, inputs=inputs, task=task, trust_remote_code=trust_remote_code),
        workload,
        loss=loss,
    )
