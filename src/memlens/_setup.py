"""What every API function does first: the workload from its keywords, the target device,
the model's spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memlens._errors import WorkloadError
from memlens.devices import Device
from memlens.sources.base import ModelSpec
from memlens.sources.checkpoint import refuse_weights_file
from memlens.sources.registry import resolve
from memlens.targets import STACK_OPTIONS, Target, resolve_target
from memlens.workload import Workload


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


def model_spec(model: Any, workload: Workload, inputs: Any = None) -> ModelSpec:
    """The spec of ``model`` under ``workload``'s model-source options (a weights file is
    refused: it holds no architecture to run)."""
    refuse_weights_file(model)
    return resolve(
        model, inputs=inputs, task=workload.task, trust_remote_code=workload.trust_remote_code
    )
