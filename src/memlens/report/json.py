"""One JSON serializer for every result: :func:`to_json`.

Every top-level output is an object that starts with ``schema_version`` and ``kind``
(``"estimate"``, ``"measurement"``, ``"fit"``, ``"sweep"``, ``"layers"``, ``"activations"``,
``"size"``, ``"inspect"``, ``"analytic-estimate"``, ``"layouts"``), then the result's own
keys. One walker converts every value:

- a dataclass becomes an object of its fields, in declaration order, shaped by its
  :class:`Rule` in :data:`RULES` (fields left out, derived values added);
- ints stay ints (every byte count is an exact int), floats are rounded to 6 decimals,
  ``None``/bools/strings pass through;
- enums are written by value (``Category.ACTIVATIONS`` -> ``"activations"``), enums with
  non-string values by lower-case name (``Cost.LOW`` -> ``"low"``);
- tuples, lists and sets become lists, dict keys strings, paths strings;
- anything else is refused with a :class:`TypeError` naming where it was found, so nothing
  is ever serialised by accident (a tensor, a callable, a model).

Large internals are left out by a rule, never by accident: an :class:`Estimate`'s
``Timeline`` (every allocation event) is omitted, its allocator replay is summarised by its
peaks and segment count (the per-event curves are omitted); a checkpoint's tensor list and
an activation report's curves appear only with ``detail=True``.

Schema versions: 1 was :meth:`Estimate.to_dict` alone. 2: every result, with ``kind``;
nested results (a fit's estimates, a sweep's estimates) are written whole.

Example usage::

    est = memlens.estimate("resnet18", batch=2, device="cpu")
    print(json.dumps(to_json(est), indent=2))
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

#: Version of the JSON layout written by :func:`to_json`; bumped on any incompatible change.
SCHEMA_VERSION = 2
#: Decimals kept of a float (ratios, seconds).
FLOAT_DECIMALS = 6


@dataclass(frozen=True)
class Rule:
    """How one dataclass is written, beyond its plain fields."""

    kind: str | None = None  # the ``kind`` of a top-level output (None: only ever nested)
    omit: tuple[str, ...] = ()  # fields never written (large internals, or reshaped by extra)
    detail: tuple[str, ...] = ()  # fields written only with ``detail=True``
    derived: tuple[str, ...] = ()  # properties written after the fields
    extra: Callable[[Any], dict[str, Any]] | None = None  # computed keys, written last


def _estimate_extra(e: Any) -> dict[str, Any]:
    """An estimate's totals, its budget table and its peak, as in schema 1."""
    return {
        "total_bytes": e.total_bytes,
        "slack_bytes": e.slack_bytes,
        "budget": {cat.value: n for cat, n in e.budget()},
        "overhead": {
            "context_bytes": e.context_bytes,
            "context": e.context_label,
            "workspaces": e.workspaces(),
            "allocator_slack_bytes": e.slack_bytes,
            "nccl": dict(e.parallel.nccl) if e.parallel is not None else {},
        },
        "peak": {"phase": e.peak_phase, "module": e.peak_module, "op": e.peak_op},
        "fits": e.fits,
        "tight": e.tight,
        "free_bytes": e.free_bytes,
        "effective_batch": e.workload.effective_batch,
        "compute": {
            "step_flops": e.step_flops,
            "recompute_flops": e.recompute_flops,
            "recompute_share": e.recompute_share,
        },
    }


#: Rules by class name. A dataclass without a rule is written field by field.
RULES: dict[str, Rule] = {
    # estimate
    "Estimate": Rule(
        kind="estimate",
        omit=("timeline", "peak_phase", "peak_module", "peak_op", "step_flops", "recompute_flops"),
        extra=_estimate_extra,
    ),
    "AllocatorResult": Rule(omit=("sizes", "allocated", "reserved")),  # per-event curves
    "HostMemory": Rule(derived=("total_bytes",)),
    "ParallelInfo": Rule(derived=("outside_bytes",)),
    "Layout": Rule(derived=("distributed", "ddp")),
    "Workload": Rule(derived=("effective_batch",)),
    "ZeroConfig": Rule(derived=("overlap",)),
    # closed form under a parallel layout (memlens.analytic) and fit --gpus (plan.layouts)
    "LayoutEstimate": Rule(
        kind="analytic-estimate",
        derived=("peak_bytes", "total_bytes", "capacity_bytes", "free_bytes", "fits"),
    ),
    "Communication": Rule(derived=("total_bytes",)),
    "LayoutPlan": Rule(kind="layouts"),
    "LayoutRow": Rule(derived=("comm_per_sample",)),
    # measure
    "Measurement": Rule(kind="measurement"),
    # fit and sweep
    "FitResult": Rule(kind="fit", derived=("max_batch", "capacity_bytes", "shortfall_bytes")),
    "BatchSearch": Rule(derived=("traces", "bounded")),
    "Option": Rule(
        derived=(
            "label",
            "fits",
            "micro_batch",
            "micro_steps",
            "risk",
            "overhead",
            "compute_overhead",
        )
    ),
    "SweepResult": Rule(kind="sweep", derived=("batches", "capacity_bytes")),
    # layers, activations, size
    "LayerReport": Rule(kind="layers"),
    "LayerRow": Rule(derived=("flops", "depth")),
    "LayerTotals": Rule(derived=("flops",)),
    "ActivationReport": Rule(
        kind="activations",
        detail=("curve", "tensor_curve"),
        derived=("peak_activation_bytes", "skip_factor"),
    ),
    "SizeReport": Rule(kind="size"),
    "ServePlan": Rule(kind="serve-plan", derived=("non_kv_bytes", "fits")),
    "InferenceWeights": Rule(derived=("total_bytes",)),
    "SizeRow": Rule(derived=("bits_per_param",)),
    # inspect (checkpoint headers, ONNX graphs)
    "WeightsSummary": Rule(
        kind="inspect",
        detail=("tensors",),
        derived=("n_tensors", "n_params", "weight_bytes", "by_dtype", "largest"),
    ),
    "OnnxSummary": Rule(
        kind="inspect", derived=("format", "n_params", "weight_bytes", "input_bytes")
    ),
}


RULES["GenerationEstimate"] = RULES["Estimate"]  # and its generation field, whole


def to_json(result: Any, *, detail: bool = False, **attached: Any) -> dict[str, Any]:
    """``result`` as a JSON-safe dict headed by ``schema_version`` and ``kind``.

    ``detail`` adds the fields a rule keeps for detail (a checkpoint's every tensor, an
    activation report's curves). ``attached`` results are written under their keyword
    (``to_json(est, measured=m)``); ``None`` ones are left out.
    """
    rule = RULES.get(type(result).__name__)
    if rule is None or rule.kind is None:
        raise TypeError(f"{type(result).__name__} is not a result memlens writes as JSON")
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": rule.kind}
    out.update(_value(result, detail, type(result).__name__))
    for key, value in attached.items():
        if value is not None:
            out[key] = _value(value, detail, key)
    return out


def _value(obj: Any, detail: bool, where: str) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value if isinstance(obj.value, str) else obj.name.lower()
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return round(obj, FLOAT_DECIMALS) if math.isfinite(obj) else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass(obj, detail, where)
    if isinstance(obj, Mapping):
        return {_key(k, where): _value(v, detail, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return [_value(v, detail, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"{where}: cannot write a {type(obj).__qualname__} as JSON")


def _key(key: Any, where: str) -> str:
    if isinstance(key, enum.Enum):
        return str(key.value)
    if isinstance(key, (str, int)) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"{where}: cannot write a {type(key).__qualname__} key as JSON")


def _dataclass(obj: Any, detail: bool, where: str) -> dict[str, Any]:
    rule = RULES.get(type(obj).__name__, Rule())
    skip = set(rule.omit) | (set() if detail else set(rule.detail))
    out = {
        f.name: _value(getattr(obj, f.name), detail, f"{where}.{f.name}")
        for f in dataclasses.fields(obj)
        if f.name not in skip
    }
    for name in rule.derived:
        out[name] = _value(getattr(obj, name), detail, f"{where}.{name}")
    if rule.extra is not None:
        out.update(_value(rule.extra(obj), detail, where))
    return out
