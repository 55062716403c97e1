"""What every API function does first: the workload from its keywords, the target device,
the model's spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from memlens._errors import ConfigError, WorkloadError
from memlens.devices import Device
from memlens.sources.base import ModelSpec
from memlens.sources.checkpoint import refuse_weights_file
from memlens.sources.registry import resolve
from memlens.targets import STACK_OPTIONS, Target, resolve_target
from memlens.workload import QUANTIZE, Workload


def prepare(
    workload: Workload | None,
    fields: Mapping[str, Any],
    use: str,
    *,
    device: str | Device | Target | None,
    budget: int | str | None = None,
) -> tuple[Workload, Target]:
    """The workload of API function ``use`` (``workload`` with ``fields`` changed) for the
    target ``device``, and that target (:func:`memlens.targets.resolve_target`). The target's
    stack keywords (``cuda_version``, ``eager_module_loading``, ``context``) are taken out of
    ``fields`` for the target."""
    stack = {k: fields[k] for k in STACK_OPTIONS if fields.get(k) is not None}
    target = resolve_target(device, budget, **stack)
    rest = {k: v for k, v in fields.items() if k not in STACK_OPTIONS}
    changed = Workload.from_fields(rest, base=workload, use=use)
    check_target(changed, target)
    return changed, target


def check_target(workload: Workload, target: Target) -> None:
    """Refuse a workload the target cannot run (optimizer offload needs a CUDA device)."""
    if workload.offload_optimizer and target.kind != "cuda":
        raise WorkloadError("offload_optimizer", True, "moves state from a CUDA device to the host")


def explicit_fields(fields: Mapping[str, Any], base: Workload | None) -> set[str]:
    """The workload fields the caller chose: those in ``fields``, and those of a ``base``
    workload that differ from their defaults."""
    chosen = set(fields)
    if base is not None:
        default = Workload()
        chosen |= {f.name for f in dataclasses.fields(Workload)
                   if getattr(base, f.name) != getattr(default, f.name)}  # fmt: skip
    return chosen


def checkpoint_defaults(spec: ModelSpec, workload: Workload, explicit: set[str]) -> Workload:
    """``workload`` with the checkpoint's own settings where the caller chose none.

    - inference runs in the config's ``torch_dtype`` (bf16 for most LLMs), as
      ``from_pretrained(torch_dtype="auto")`` and vLLM's ``--dtype auto`` load it; training
      keeps fp32 weights (``from_pretrained``'s default in transformers 4.x, and the master
      weights of mixed precision);
    - a bitsandbytes ``quantization_config`` sets ``quantize`` (nf4, int4, int8) and
      ``bnb_compute_dtype``; a GPTQ, AWQ or fp8 one, which no traced layer stores, is
      refused unless ``quantize`` is given.

    What was used and where it came from is put in ``spec.metadata["settings"]`` (reports
    show it: "bf16 from config torch_dtype").
    """
    found = spec.metadata.get("checkpoint") or {}
    settings: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if "precision" in explicit:
        settings["precision"] = f"{workload.precision} (given)"
    elif "precision" in found:
        dtype, where = found["precision"]
        if workload.training:
            settings["precision"] = (
                f"{workload.precision} (training default; the {where} is {dtype}: "
                "--precision bf16-amp or bf16 to train in it)"
            )
        else:
            changes["precision"] = dtype
            settings["precision"] = f"{dtype} from {where}"
    else:
        settings["precision"] = f"{workload.precision} (default)"
    if "quantization" in found and "quantize" not in explicit:
        quant, where = found["quantization"]
        from memlens.sources.huggingface import describe_quantization

        text = describe_quantization(quant)
        if quant["quantize"] is None:
            raise ConfigError(
                f"{spec.name}: its {where} is {text}, a layout memlens cannot trace yet; "
                f"pass --quantize ({', '.join(QUANTIZE)}) to trace another, or see its "
                "served memory in closed form with memlens serve-plan"
            )
        changes["quantize"] = quant["quantize"]
        if quant.get("compute_dtype") and "bnb_compute_dtype" not in explicit:
            changes["bnb_compute_dtype"] = quant["compute_dtype"]
        settings["quantize"] = f"{quant['quantize']} from {where} ({text})"
    spec.metadata["settings"] = settings
    return workload.with_(**changes) if changes else workload


def resolve_model(
    model: Any,
    workload: Workload,
    fields: Mapping[str, Any],
    base: Workload | None = None,
    inputs: Any = None,
) -> tuple[ModelSpec, Workload]:
    """:func:`model_spec` and the workload with the checkpoint's defaults
    (:func:`checkpoint_defaults`) where neither ``fields`` nor ``base`` chose a value."""
    spec = model_spec(model, workload, inputs)
    return spec, checkpoint_defaults(spec, workload, explicit_fields(fields, base))


def model_spec(model: Any, workload: Workload, inputs: Any = None) -> ModelSpec:
    """The spec of ``model`` under ``workload``'s model-source options (a weights file is
    refused: it holds no architecture to run)."""
    refuse_weights_file(model)
    return resolve(
        model, inputs=inputs, task=workload.task, trust_remote_code=workload.trust_remote_code
    )
