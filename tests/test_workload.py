"""The options schema: values validated and parsed by their field, unknown names refused with
the closest one, and every field carrying what the API and the CLI need."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from memlens import Workload, WorkloadError
from memlens.workload import USES, LoraConfig, flag, options, parse_batches, parse_shape


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"batch": 0}, "batch", "positive integer"),
        ({"batch": -3}, "batch", "positive integer"),
        ({"batch": True}, "batch", "positive integer"),
        ({"batch": "two"}, "batch", "positive integer"),
        ({"seq_len": 0}, "seq_len", "positive integer"),
        ({"mode": "serve"}, "mode", "inference, train"),
        ({"optimizer": "adamx"}, "optimizer", "sgd, sgd-momentum, adam, adamw"),
        ({"precision": "fp8"}, "precision", "fp32"),
        ({"input_shape": (3, 0, 224)}, "input_shape", "positive integers"),
        ({"task": "chat"}, "task", "causal-lm"),
        ({"quantize": "int3"}, "quantize", "int8, int4, nf4"),
        ({"optimizer": "lion", "optimizer_impl": "fused"}, "optimizer_impl", "lion allows"),
        ({"mode": "inference", "grad_accum": 2}, "grad_accum", "training only"),
        ({"mode": "inference", "checkpoint": "blocks"}, "checkpoint", "training only"),
    ],
)
def test_bad_values_name_the_field(kwargs, field, hint):
    with pytest.raises(WorkloadError) as info:
        Workload(**kwargs)
    assert info.value.field == field
    assert field in str(info.value) and hint in str(info.value)


def test_values_are_normalised():
    w = Workload(mode="TRAIN", optimizer="AdamW", precision="BF16", input_shape=[3, 32, 32])
    assert (w.mode, w.optimizer, w.precision, w.input_shape) == (
        "train",
        "adamw",
        "bf16",
        (3, 32, 32),
    )


def test_strings_from_the_command_line_are_parsed_by_the_schema():
    w = Workload(
        batch="16",
        input_shape="3x224x224",
        dataset_bytes="20GiB",
        sample_shape="3,32,32",
        freeze="encoder.*, embed",
        lora="r=16,alpha=32,targets=q_proj,v_proj",
        checkpoint="Every-K:2",
        num_workers="0",
    )
    assert w.batch == 16 and w.input_shape == (3, 224, 224) and w.sample_shape == (3, 32, 32)
    assert w.dataset_bytes == 20 * 2**30
    assert w.freeze == ("encoder.*", "embed")
    assert w.lora == LoraConfig(r=16, alpha=32.0, targets=("q_proj", "v_proj"))
    assert w.checkpoint == "every-k:2" and w.num_workers == 0


def test_workload_is_frozen_and_keyword_only():
    w = Workload()
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.batch = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Workload("train")  # type: ignore[misc]


def test_unknown_keyword_names_the_closest_field():
    with pytest.raises(WorkloadError) as info:
        Workload.from_fields({"optimiser_impl": "foreach"})
    assert info.value.field == "optimiser_impl"
    assert "did you mean 'optimizer_impl'?" in str(info.value)
    with pytest.raises(WorkloadError, match="no such option"):
        Workload().with_(zzz=1)


def test_a_field_that_does_not_apply_is_refused():
    with pytest.raises(WorkloadError, match="does not apply to layers") as info:
        Workload.from_fields({"optimizer": "sgd"}, use="layers")
    assert info.value.field == "optimizer"
    with pytest.raises(WorkloadError, match="does not apply to sweep"):
        Workload.from_fields({"batch": 4}, use="sweep")
    base = Workload(batch=4)
    assert Workload.from_fields({"precision": "bf16"}, base=base, use="layers").batch == 4


def test_every_field_carries_its_option():
    seen_flags = set()
    for f, meta, kind in options():
        assert meta.help.endswith(".") and meta.group, f.name
        assert meta.uses <= set(USES), f.name
        assert f.default is not dataclasses.MISSING, f"{f.name} needs a default"
        assert meta.parse(f.name, f.default) == f.default, f"{f.name}: default not canonical"
        if meta.choices and meta.switch is None and f.name != "checkpoint":
            assert all(meta.parse(f.name, c) == c for c in meta.choices)
        assert kind is not type(None)
        seen_flags.add(flag(f.name))
    assert len(seen_flags) == len(list(options())), "two fields share a flag"


def test_which_commands_take_which_options():
    def names(use: str) -> set[str]:
        return {f.name for f, _, _ in options(use)}

    strategies = {"checkpoint", "freeze", "lora", "quantize", "grad_accum", "offload_optimizer"}
    data = {"dataset_size", "sample_shape", "dataset_bytes", "num_workers", "prefetch_factor"}
    assert strategies | data <= names("estimate") and strategies | data <= names("measure")
    assert strategies <= names("fit") and strategies <= names("sweep")
    assert "batch" not in names("fit") | names("sweep")  # searched, or given as a list
    assert not {"optimizer", "grad_accum", "checkpoint", "pin_memory"} & names("layers")
    assert "mode" not in names("activations")  # inference only
    assert {"task", "trust_remote_code", "input_shape", "seq_len"} <= names("layers")


def test_flags():
    assert flag("optimizer_impl") == "--optimizer-impl"
    assert flag("mode") == "--train/--inference"
    assert flag("lora.r") == "--lora"


def test_parse_shape_and_batches():
    assert parse_shape("3x224x224") == (3, 224, 224)
    assert parse_shape("3,32,32") == (3, 32, 32)
    with pytest.raises(WorkloadError):
        parse_shape("3xabc")
    with pytest.raises(WorkloadError):
        parse_shape("3x-1")
    assert parse_batches("8,1, 2,8") == (1, 2, 8)
    assert parse_batches([4, 2]) == (2, 4)
    for bad in ("1,x", "", [0], [True]):
        with pytest.raises(WorkloadError) as info:
            parse_batches(bad)
        assert info.value.field == "batches"


def test_the_schema_never_imports_torch():
    code = "import sys, memlens.workload; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
