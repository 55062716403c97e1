""":func:`estimate`, the main entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memlens._pipeline import estimate_spec
from memlens._results import Estimate
from memlens.devices import Device, resolve_device
from memlens.plan._checkpoint import auto_checkpoint
from memlens.sources.checkpoint import refuse_weights_file
from memlens.sources.registry import resolve
from memlens.workload import STRATEGY_FIELDS, LoraConfig, Workload


def make_workload(
    *,
    mode: str = "train",
    batch: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    optimizer: str = "adam",
    device: str = "cuda",
    **options: Any,
) -> Workload:
    """A :class:`Workload`; keywords among :data:`~memlens.workload.STRATEGY_FIELDS` set
    its strategies, any others are source-specific options."""
    strategies = {k: options.pop(k) for k in STRATEGY_FIELDS if k in options}
    return Workload(
        mode=mode,
        batch=1 if batch is None else batch,
        input_shape=input_shape,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        device=device,
        options=options,
        **strategies,
    )


def estimate(
    model: Any,
    *,
    inputs: Any = None,
    task: str | None = None,
    trust_remote_code: bool = False,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    batch: int | None = None,
    optimizer: str = "adam",
    device: str | Device = "cuda",
    budget: int | str | None = None,
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
    dataset_size: int | None = None,
    sample_shape: tuple[int, ...] | str | None = None,
    dataset_bytes: int | str | None = None,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    pin_memory: bool = False,
    **options: Any,
) -> Estimate:
    """Estimate the peak memory of one step of ``model``.

    ``model`` is a name (``"resnet50"``, ``"timm/vit_base_patch16_224"``), a factory spec
    (``"path/file.py:fn"``, ``"pkg.mod:fn"``), a zero-argument callable returning an
    ``nn.Module``, or an ``nn.Module``. ``device`` is ``"cuda"``, ``"cpu"`` or a catalog name
    (``"h100-80gb"``); ``budget`` (``"24GiB"``) overrides its capacity.

    Strategies (see :class:`~memlens.workload.Workload` and :mod:`memlens.strategies`):
    ``precision`` (``bf16-amp`` autocasts with fp32 weights), ``checkpoint`` (``blocks``,
    ``every-k:2``, ``sqrt``, ``auto``: the fewest blocks that fit the device), ``freeze``,
    ``lora`` (``"r=16,alpha=32,targets=q_proj,v_proj"``), ``quantize`` (``int8``, ``int4``,
    ``nf4``), ``optimizer_impl``, ``grad_accum``, ``offload_optimizer``; data loading
    (``dataset_size``, ``sample_shape``, ``dataset_bytes``, ``num_workers``,
    ``prefetch_factor``, ``pin_memory``) fills the host-memory table ``Estimate.host``.

    Example usage::

        est = memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
        print(est.peak_bytes, est.breakdown, est.fits)
        est = memlens.estimate("llama-3-8b", quantize="nf4", lora="r=16", precision="bf16",
                               checkpoint="blocks", device="rtx4090-24gb")
    """
    kind, target = resolve_device(device, budget)
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
        dataset_size=dataset_size,
        sample_shape=sample_shape,
        dataset_bytes=dataset_bytes,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        pin_memory=pin_memory,
        **options,
    )
    refuse_weights_file(model)
    spec = resolve(model, inputs=inputs, task=task, trust_remote_code=trust_remote_code)
    if workload.checkpoint == "auto":
        return auto_checkpoint(spec, workload, target, loss)
    return estimate_spec(spec, workload, target, loss)
