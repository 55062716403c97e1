"""The one JSON serializer: every result kind, the walker's rules, and what is left out."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import nn

import memlens
from memlens.categories import Category
from memlens.devices import get_device
from memlens.measurement.result import Measurement
from memlens.plan import (
    BatchSearch,
    Choice,
    Cost,
    FitResult,
    Option,
    Probe,
    StrategySearch,
    SweepResult,
)
from memlens.report.json import RULES, SCHEMA_VERSION, to_json
from memlens.sources.onnx_graph import OnnxSummary
from memlens.sources.weights import DtypeTotals, TensorInfo, WeightsSummary

SRC = Path(memlens.__file__).parent


def _roundtrip(data: dict) -> dict:
    """What a reader of the printed JSON gets (fails on anything json cannot write)."""
    return json.loads(json.dumps(data))


@pytest.fixture(scope="module")
def linear_estimate() -> memlens.Estimate:
    """Inference of ``Linear(4, 3)`` on 2 samples: 15 float32 parameters, 60 bytes."""
    return memlens.estimate(
        nn.Linear(4, 3), batch=2, input_shape=(4,), mode="inference", device="cpu"
    )


def test_estimate_keeps_the_schema_1_keys(linear_estimate: memlens.Estimate) -> None:
    data = _roundtrip(to_json(linear_estimate))
    assert (data["schema_version"], data["kind"]) == (SCHEMA_VERSION, "estimate") == (2, "estimate")
    schema_1 = (
        "model source workload device num_params trainable_params peak_bytes "
        "reserved_peak_bytes total_bytes first_step_peak_bytes breakdown budget peak fits "
        "free_bytes unknowns seconds effective_batch strategies compute host"
    )
    assert set(schema_1.split()) <= set(data)
    assert data["num_params"] == 4 * 3 + 3
    assert data["breakdown"]["parameters"] == 15 * 4
    assert data["breakdown"]["inputs"] == 2 * 4 * 4
    assert data["workload"]["batch"] == 2 and data["workload"]["mode"] == "inference"
    assert set(data["peak"]) == {"phase", "module", "op"}
    assert data["compute"]["step_flops"] == 2 * 2 * 4 * 3  # one (2x4) @ (4x3) matmul
    assert sum(data["budget"].values()) == data["total_bytes"]


def test_estimate_leaves_out_the_timeline_and_allocator_curves(
    linear_estimate: memlens.Estimate,
) -> None:
    data = to_json(linear_estimate)
    assert "timeline" not in data
    curves = {"sizes", "allocated", "reserved"}  # one entry per block or event
    assert not curves & set(data["allocator"])
    assert {"peak_allocated", "peak_reserved", "segments"} <= set(data["allocator"])
    assert data["allocator"]["peak_allocated"] == data["peak_bytes"]
    # the derived keys replace the fields they reshape, rather than repeat them
    assert not {"peak_phase", "peak_module", "peak_op", "step_flops"} & set(data)


def test_attached_results_are_written_under_their_key(linear_estimate: memlens.Estimate) -> None:
    m = Measurement(
        device="cpu", peak_bytes=1024, reserved_peak_bytes=1024, baseline_bytes=60, step_seconds=0.5
    )
    data = to_json(linear_estimate, measured=m, other=None)
    assert data["measured"] == dataclasses.asdict(m)
    assert "other" not in data
    assert to_json(m) == {"schema_version": 2, "kind": "measurement", **dataclasses.asdict(m)}


def _option(total: int, *choices: Choice) -> Option:
    return Option(
        choices=choices,
        target_batch=8,
        total_bytes=total,
        peak_bytes=total - 100,
        capacity_bytes=1000,
        training=True,
    )


def test_fit_and_sweep_write_their_estimates_whole(linear_estimate: memlens.Estimate) -> None:
    half = Choice("bf16-amp", (("precision", "bf16-amp"),), risk=Cost.LOW)
    accum = Choice("grad-accum 2", (("grad_accum", 2),), overhead=Cost.LOW, micro_steps=2)
    fit = FitResult(
        model="m",
        device=get_device("t4"),
        search=BatchSearch(
            max_batch=2,
            capacity_bytes=1000,
            cap=64,
            probes=[Probe(1, 400, True), Probe(2, 900, True), Probe(3, 1100, False)],
        ),
        at_max=linear_estimate,
        above=None,
        strategies=StrategySearch(
            target_batch=8, baseline=_option(2000), fitting=[_option(990, half, accum)], traces=2
        ),
        traces=5,
        seconds=1.23456789,
        search_seconds=0.5,
    )
    data = _roundtrip(to_json(fit))
    assert data["kind"] == "fit" and data["max_batch"] == 2 and data["seconds"] == 1.234568
    assert data["search"]["traces"] == 3 and data["search"]["bounded"] is True
    assert data["device"]["name"] == "t4"
    assert data["at_max"]["peak_bytes"] == linear_estimate.peak_bytes
    assert "timeline" not in data["at_max"] and data["above"] is None
    best = data["strategies"]["fitting"][0]
    assert best["label"] == "bf16-amp + grad-accum 2"
    assert (best["micro_batch"], best["micro_steps"], best["fits"]) == (4, 2, True)
    assert (best["risk"], best["overhead"]) == ("low", "low")  # int enums by name
    assert best["choices"][0]["options"] == [["precision", "bf16-amp"]]
    assert data["strategies"]["baseline"]["fits"] is False

    sweep = _roundtrip(to_json(SweepResult("m", None, [linear_estimate], 0.25)))
    assert (sweep["kind"], sweep["batches"], sweep["capacity_bytes"]) == ("sweep", [2], None)
    assert sweep["estimates"][0]["breakdown"] == linear_estimate.breakdown


def test_layers_and_activations() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    report = memlens.layers(model, batch=3, input_shape=(4,))
    data = _roundtrip(to_json(report))
    assert data["kind"] == "layers"
    assert [r["params"] for r in data["rows"]] == [4 * 8 + 8, 0, 8 * 2 + 2]
    assert [r["macs"] for r in data["rows"]] == [3 * 4 * 8, 0, 3 * 8 * 2]
    assert all(r["flops"] == 2 * r["macs"] and r["depth"] == 1 for r in data["rows"])
    assert data["totals"]["flops"] == 2 * (3 * 4 * 8 + 3 * 8 * 2)
    assert data["rows"][0]["formula"]["value"] == 40

    acts = memlens.activations(model, batch=3, input_shape=(4,))
    short, full = to_json(acts), to_json(acts, detail=True)
    assert short["kind"] == "activations" and "curve" not in short
    assert full["curve"] == acts.curve and full["tensor_curve"] == acts.tensor_curve
    assert short["peak_activation_bytes"] == acts.peak_bytes - acts.baseline_bytes


def test_size_rows_carry_bits_per_param() -> None:
    data = _roundtrip(to_json(memlens.size(1_000_000, metadata=False)))
    assert data["kind"] == "size"
    fp32 = next(r for r in data["rows"] if r["format"] == "fp32")
    assert fp32["total_bytes"] == 4_000_000 and fp32["bits_per_param"] == 32.0


def test_inspect_lists_tensors_only_in_detail() -> None:
    a = TensorInfo("a", (10, 4), "F32", 160)
    b = TensorInfo("b", (3,), "BF16", 6)
    summary = WeightsSummary("safetensors", ("w.safetensors",), (a, b), {"k": "v"})
    data = _roundtrip(to_json(summary))
    assert data["kind"] == "inspect" and "tensors" not in data
    assert (data["n_tensors"], data["n_params"], data["weight_bytes"]) == (2, 43, 166)
    assert data["by_dtype"] == {
        "F32": {"tensors": 1, "params": 40, "bytes": 160},
        "BF16": {"tensors": 1, "params": 3, "bytes": 6},
    }
    assert data["largest"] == {"name": "a", "shape": [10, 4], "dtype": "F32", "nbytes": 160}
    assert [t["name"] for t in to_json(summary, detail=True)["tensors"]] == ["a", "b"]

    onnx = OnnxSummary(
        path="m.onnx",
        batch=2,
        opset=17,
        by_dtype={"FLOAT": DtypeTotals(2, 100, 400)},
        inputs=(TensorInfo("x", (2, 8), "FLOAT", 64),),
        activation_bytes=256,
        peak_bytes=720,
        peak_node="Gemm#0",
        peak_op="Gemm",
        peak_live=(),
        unknown=(),
    )
    data = _roundtrip(to_json(onnx))
    assert (data["kind"], data["format"], data["input_bytes"], data["weight_bytes"]) == (
        "inspect",
        "onnx",
        64,
        400,
    )


class _Color(enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


@dataclass
class _Inner:
    shape: tuple[int, ...]
    level: _Level


@dataclass
class _Outer:
    name: str
    inner: _Inner
    by_category: dict[Category, int]
    ratio: float
    path: Path
    tags: frozenset[str]


def test_walker_rules() -> None:
    from memlens.report.json import Rule

    RULES["_Outer"] = Rule(kind="test")
    try:
        outer = _Outer(
            "x",
            _Inner((2, 3), _Level.HIGH),
            {Category.ACTIVATIONS: 7},
            1 / 3,
            Path("a/b"),
            frozenset({"b", "a"}),
        )
        assert to_json(outer) == {
            "schema_version": 2,
            "kind": "test",
            "name": "x",
            "inner": {"shape": [2, 3], "level": "high"},
            "by_category": {"activations": 7},
            "ratio": 0.333333,
            "path": "a/b",
            "tags": ["a", "b"],
        }
        outer.name = _Color.RED  # type: ignore[assignment]
        assert to_json(outer)["name"] == "red"
        outer.inner.shape = (object(),)  # type: ignore[assignment]
        with pytest.raises(TypeError, match=r"_Outer\.inner\.shape\[0\]: cannot write a object"):
            to_json(outer)
    finally:
        del RULES["_Outer"]


def test_only_results_are_top_level() -> None:
    with pytest.raises(TypeError, match="not a result"):
        to_json(_Inner((1,), _Level.HIGH))
    with pytest.raises(TypeError, match="not a result"):
        to_json({"peak_bytes": 1})


def _memlens_dataclasses() -> dict[str, list[type]]:
    """Every dataclass defined in memlens, by class name."""
    out: dict[str, list[type]] = {}
    for info in pkgutil.walk_packages([str(SRC)], prefix="memlens."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == info.name
            ):
                out.setdefault(obj.__name__, []).append(obj)
    return out


def test_every_rule_names_one_memlens_dataclass() -> None:
    classes = _memlens_dataclasses()
    for name, rule in RULES.items():
        assert len(classes.get(name, [])) == 1, f"RULES[{name!r}] names {classes.get(name)}"
        fields = {f.name for f in dataclasses.fields(classes[name][0])}
        assert set(rule.omit) | set(rule.detail) <= fields, name
        for attr in rule.derived:
            assert hasattr(classes[name][0], attr), f"{name}.{attr}"


def test_results_have_no_serializers_of_their_own() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "def to_dict(" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
