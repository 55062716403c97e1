""":func:`estimate`, the main entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memlens._results import Estimate
from memlens._setup import prepare, resolve_model
from memlens.analytic.estimate import analytic_estimate, closed_form_reason
from memlens.analytic.layout import LayoutEstimate
from memlens.devices import Device
from memlens.plan._checkpoint import estimate_step
from memlens.workload import Workload


def estimate(
    model: Any,
    workload: Workload | None = None,
    *,
    device: str | Device = "cuda",
    budget: int | str | None = None,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    **fields: Any,
) -> Estimate | LayoutEstimate:
    """Estimate the peak memory of one step of ``model``.

    ``model`` is a name (``"resnet50"``, ``"timm/vit_base_patch16_224"``), a factory spec
    (``"path/file.py:fn"``, ``"pkg.mod:fn"``), a zero-argument callable returning an
    ``nn.Module``, or an ``nn.Module``. ``device`` is ``"cuda"``, ``"cpu"`` or a catalog name
    (``"h100-80gb"``); ``budget`` (``"24GiB"``) overrides its capacity. ``inputs`` replaces
    the model's default inputs, ``loss`` its default loss.

    The step is ``workload`` (default: a training step of batch 1 with Adam) with ``fields``
    changed: any :class:`~memlens.workload.Workload` field, for example ``batch``,
    ``precision`` (``bf16-amp`` autocasts with fp32 weights), ``checkpoint`` (``blocks``,
    ``every-k:2``, ``sqrt``, ``auto``: the fewest blocks that fit the device), ``lora``
    (``"r=16,alpha=32,targets=q_proj,v_proj"``), ``quantize``, ``offload_optimizer``, or data
    loading (``dataset_size``, ``num_workers``...), which fills the host-memory table
    ``Estimate.host``. An unknown keyword raises :class:`~memlens.WorkloadError` naming the
    closest field.

    The training step is the canonical PyTorch loop unless ``loop`` names another
    (``"hf-trainer"``: output released before backward, gradient clipping, a fused AdamW;
    ``"lightning"``: ``zero_grad`` between forward and backward), with ``zero_grad``
    (``"free"``/``"zeros"``) and ``release_output`` overriding what the loop implies; or it is
    ``step=fn``, the user's own ``fn(model, batch, optimizer)`` (or ``"module:function"``),
    traced as written at steady state, ``batch`` being ``inputs`` as given.

    ``generate=True`` traces generation instead of one step (``prompt_len``, ``new_tokens``,
    ``num_beams``, ``prefill_chunk``, ``kv_cache``): a
    :class:`~memlens.GenerationEstimate`, as :func:`memlens.generate_estimate` returns.

    Example usage::

        import memlens
        import torch

        est = memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
        print(est.peak_bytes, est.breakdown, est.fits)
        print(est)  # one line; est.summary() is the long form
        est = memlens.estimate("llama-3-8b", quantize="nf4", lora="r=16", precision="bf16",
                               checkpoint="blocks", device="rtx-4090")

        def my_step(model, batch, optimizer):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        batch = {"input_ids": torch.randint(0, 50257, (2, 128))}
        batch["labels"] = batch["input_ids"]
        est = memlens.estimate("gpt2", step=my_step, inputs=batch, device="a100-80gb")

    A parallel layout (``dp``, ``fsdp``, ``tp``, ``pp``, ``cp``, ``deepspeed``...) is traced
    per rank, or answered in closed form (:mod:`memlens.analytic`, a
    :class:`~memlens.analytic.layout.LayoutEstimate`: per pipeline stage) with
    ``analytic=True``, for DeepSpeed and sequence parallelism, and by default for models
    above 20B parameters; its ``method`` says which.
    """
    work, target = prepare(workload, fields, "estimate", device=device, budget=budget)
    if work.generate:
        from memlens._generate import estimate_generation

        spec, work = resolve_model(model, work, fields, workload, inputs)
        return estimate_generation(spec, work, target)
    reason = closed_form_reason(model, work)
    if reason is not None:
        return analytic_estimate(model, work, device=target, method=reason)
    spec, work = resolve_model(model, work, fields, workload, inputs)
    return estimate_step(spec, work, target, loss)
