"""A catalogue of hostile or mistaken inputs (files, configs, factories, flags, API calls),
each with its expected outcome: a specific error message, or a correct answer.

Command-line cases run through ``memlens.cli.main`` (the console script) and must end in one
line on stderr, exit status 2 and no traceback; API cases raise a memlens error. Tiny models
keep the whole table fast.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import memlens
from memlens._errors import MemlensError

from conftest import cli_exit_code

#: The outside file the hostile checkpoints point at: never opened, never echoed.
SECRET = "root:x:0:0:SECRET"

FACTORIES = """
import os
import time
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class ToNumpy(MLP):
    def forward(self, x):
        self.l1(x).detach().numpy()
        return self.l2(torch.relu(self.l1(x)))


class TwoInputs(MLP):
    def forward(self, x, z):
        return self.l2(torch.relu(self.l1(x))) + z


class Chatty(MLP):
    def forward(self, x):
        print("hello from forward {not json")
        os.write(1, b"written to descriptor 1\\n")
        return super().forward(x)


def mlp():
    return MLP()


def to_numpy():
    return ToNumpy()


def two_inputs():
    return TwoInputs()


def chatty():
    return Chatty()


def not_a_module():
    return 5


def raises():
    raise ValueError("boom in the factory")


def hangs():
    time.sleep(10_000)


def needs_missing():
    import not_a_module_memlens_knows  # noqa: F401
"""


def _header(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _f32(n: int, begin: int = 0) -> dict:
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, begin + 4 * n]}


def _index(folder: Path, weight_map: dict[str, str]) -> Path:
    folder.mkdir()
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": weight_map}))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file the catalogue names, in one folder; ``secret.txt`` lies outside the model
    folders."""
    root = tmp_path_factory.mktemp("lab")
    (root / "secret.txt").write_text(SECRET)
    (root / "models.py").write_text(FACTORIES)
    (root / "syntax.py").write_text("def f(:\n")
    w = {"w": _f32(2)}
    files = {
        "past_end.safetensors": _header(w, bytes(8), length=10_000),
        "huge_len.safetensors": _header(b"{}", length=2**40),
        "not_json.safetensors": _header(b'{"w": {"dtype": ', bytes(8)),
        "deep.safetensors": _header(b"[" * 50_000 + b"]" * 50_000),
        "list.safetensors": _header(b"[1, 2]"),
        "short.safetensors": b"\x01\x02",
        "overlap.safetensors": _header({"a": _f32(2), "b": _f32(2, 4)}, bytes(8)),
        "dtype.safetensors": _header({"w": {**_f32(2), "dtype": "F128"}}, bytes(8)),
        "dup.safetensors": _header(b'{"w": {}, "w": {}}'),
        "neg_shape.safetensors": _header({"w": {**_f32(2), "shape": [-2]}}, bytes(8)),
        "ok.safetensors": _header(w, bytes(8)),
        "model.bin": b"PK\x03\x04",
        "model.pt": b"\x80\x02",
        "pickle.weights": b"\x80\x04\x95",
        "trunc.gguf": b"GGUF\x03\x00",
        "magic.gguf": b"GGML" + bytes(20),
        "random.onnx": bytes(range(7, 107)),
        "random.weights": b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09",
    }
    for name, raw in files.items():
        (root / name).write_bytes(raw)
    _index(root / "abs_index", {"w": "/etc/passwd"})
    _index(root / "dotdot_index", {"w": "../secret.txt"})
    _index(root / "missing_index", {"w": "model-00002.safetensors"})
    link = root / "link_index"
    _index(link, {"w": "shard.safetensors"})
    (link / "shard.safetensors").symlink_to(root / "secret.txt")
    (root / "link_folder").mkdir()
    (root / "link_folder" / "a.safetensors").symlink_to(root / "secret.txt")
    (root / "bad_map").mkdir()
    (root / "bad_map" / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    (root / "empty").mkdir()
    (root / "weights_only").mkdir()
    (root / "weights_only" / "model.safetensors").write_bytes(_header(w, bytes(8)))
    configs = {
        "not_json.json": '{"model_type": ',
        "list.json": "[1, 2]",
        "no_type.json": '{"hidden_size": 8}',
        "string_size.json": '{"model_type": "gpt2", "n_embd": "768"}',
        "dup.json": '{"model_type": "gpt2", "model_type": "llama"}',
        "deep.json": '{"model_type": "gpt2", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    }
    for name, text in configs.items():
        (root / name).write_text(text)
    _onnx_external(root / "onnx_out", "../secret.txt")
    return root


def _onnx_external(folder: Path, location: str) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    folder.mkdir()
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [], [out], [t])
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))


CPU = ("--device", "cpu")
MLP8 = ("--input-shape", "8", *CPU)

#: (id, arguments ({lab} is the fixture's folder), what the one error line must contain)
CLI_ERRORS: list[tuple[str, tuple[str, ...], str]] = [
    # checkpoint files (memlens inspect)
    ("header past the end", ("inspect", "{lab}/past_end.safetensors"), "runs past the end"),
    ("header length 1 TiB", ("inspect", "{lab}/huge_len.safetensors"), "exceeds the"),
    ("header not JSON", ("inspect", "{lab}/not_json.safetensors"), "is not valid JSON"),
    ("header nested 50k deep", ("inspect", "{lab}/deep.safetensors"), "nested deeper than 32"),
    ("header a list", ("inspect", "{lab}/list.safetensors"), "must be a JSON object"),
    ("file of 2 bytes", ("inspect", "{lab}/short.safetensors"), "too short"),
    ("overlapping tensors", ("inspect", "{lab}/overlap.safetensors"), "overlap"),
    ("unknown dtype", ("inspect", "{lab}/dtype.safetensors"), "unknown dtype 'F128'"),
    ("repeated key", ("inspect", "{lab}/dup.safetensors"), "appears twice"),
    ("negative shape", ("inspect", "{lab}/neg_shape.safetensors"), "invalid shape"),
    ("absolute shard", ("inspect", "{lab}/abs_index"), "is not a file name inside"),
    ("../ shard", ("inspect", "{lab}/dotdot_index"), "resolves outside the model's folder"),
    ("shard symlink out", ("inspect", "{lab}/link_index"), "resolves outside the model's folder"),
    ("folder symlink out", ("inspect", "{lab}/link_folder"), "resolves outside the model's folder"),
    ("missing shard", ("inspect", "{lab}/missing_index"), "are missing"),
    ("weight_map a list", ("inspect", "{lab}/bad_map"), "needs a 'weight_map' object"),
    ("empty folder", ("inspect", "{lab}/empty"), "no *.safetensors files"),
    ("no such file", ("inspect", "{lab}/nothing.safetensors"), "no such file"),
    ("path too long", ("inspect", "x" * 5000 + ".safetensors"), "File name too long"),
    ("torch.save zip", ("inspect", "{lab}/model.bin"), "pickle-based checkpoints are not read"),
    ("raw pickle .pt", ("inspect", "{lab}/model.pt"), "pickle-based checkpoints are not read"),
    ("pickle by magic", ("inspect", "{lab}/pickle.weights"), "pickle-based"),
    ("unknown format", ("inspect", "{lab}/random.weights"), "unrecognised checkpoint format"),
    ("truncated GGUF", ("inspect", "{lab}/trunc.gguf"), "runs past the end"),
    ("GGUF bad magic", ("inspect", "{lab}/magic.gguf"), "not a GGUF file"),
    ("random ONNX", ("inspect", "{lab}/random.onnx"), "cannot read as ONNX"),
    ("ONNX data outside", ("inspect", "{lab}/onnx_out/model.onnx"), "resolves outside"),
    ("weights to estimate", ("estimate", "{lab}/weights_only"), "holds weights, not a model"),
    # configs
    ("config not JSON", ("estimate", "{lab}/not_json.json"), "is not valid JSON"),
    ("config a list", ("estimate", "{lab}/list.json"), "must hold a JSON object"),
    ("config no model_type", ("estimate", "{lab}/no_type.json"), "'model_type' is missing"),
    ("config string size", ("estimate", "{lab}/string_size.json"), "must be a positive integer"),
    ("config repeated key", ("estimate", "{lab}/dup.json"), "appears twice"),
    ("config nested deep", ("estimate", "{lab}/deep.json"), "nested deeper than 32"),
    # factories and the user's code
    ("factory file missing", ("estimate", "{lab}/nope.py:f", *MLP8), "factory file not found"),
    ("factory fn missing", ("estimate", "{lab}/models.py:nofn", *MLP8), "no attribute 'nofn'"),
    ("factory syntax error", ("estimate", "{lab}/syntax.py:f", *MLP8), "SyntaxError"),
    (
        "factory not a module",
        ("estimate", "{lab}/models.py:not_a_module", *MLP8),
        "not an nn.Module",
    ),
    ("factory raises", ("estimate", "{lab}/models.py:raises", *MLP8), "boom in the factory"),
    (
        "factory never returns",
        ("estimate", "{lab}/models.py:hangs", *MLP8, "--timeout", "0.5"),
        "timed out after 0.5 s",
    ),
    (
        "factory imports a missing module",
        ("estimate", "{lab}/models.py:needs_missing", *MLP8),
        "imports a module that is not installed",
    ),
    (
        ".numpy() in forward",
        ("estimate", "{lab}/models.py:to_numpy", *MLP8),
        "reads tensor data on the host",
    ),
    ("two-input forward", ("estimate", "{lab}/models.py:two_inputs", *MLP8), "takes other inputs"),
    ("no input shape", ("estimate", "{lab}/models.py:mlp", *CPU), "no default inputs"),
    (
        "seq-len on a factory",
        ("estimate", "{lab}/models.py:mlp", *MLP8, "--seq-len", "4"),
        "invalid --seq-len 4: does not apply",
    ),
    # flags
    ("budget without unit", ("estimate", "resnet18", "--budget", "16", *CPU), "16GiB?"),
    (
        "context without unit",
        ("estimate", "resnet18", "--context", "500"),
        "invalid --context '500': size '500' has no unit: 500MiB?",
    ),
    ("fit max-batch 0", ("fit", "resnet18", *CPU, "--max-batch", "0"), "invalid --max-batch 0"),
    (
        "input width mismatch (torch logs it)",
        ("estimate", "{lab}/models.py:mlp", "--input-shape", "9", *CPU),
        "must have same reduction dim",
    ),
    ("budget negative", ("estimate", "resnet18", "--budget", "-5GiB", *CPU), "cannot parse size"),
    (
        "budget unknown unit",
        ("estimate", "resnet18", "--budget", "16XB", *CPU),
        "unknown unit 'XB'",
    ),
    (
        "seq-len on a CNN",
        ("estimate", "resnet18", "--seq-len", "128", *CPU),
        "does not apply to an image model",
    ),
    (
        "input-shape on an LLM",
        ("estimate", "gpt2", "--input-shape", "3x8", *CPU),
        "does not apply to this text model",
    ),
    (
        "image shape rank",
        ("estimate", "resnet18", "--input-shape", "224x224", *CPU),
        "reads 3-channel images",
    ),
    (
        "image channels",
        ("estimate", "resnet18", "--input-shape", "1x64x64", *CPU),
        "reads 3-channel images",
    ),
    ("batch 0", ("estimate", "resnet18", "--batch", "0", *CPU), "invalid --batch 0"),
    ("optimizer typo", ("estimate", "resnet18", "--optimizer", "adamm", *CPU), "allowed: sgd"),
    ("precision typo", ("estimate", "resnet18", "--precision", "fp13", *CPU), "allowed: fp32"),
    ("lora r=0", ("estimate", "resnet18", "--lora", "r=0", *CPU), "invalid --lora r=0"),
    (
        "checkpoint every-k:0",
        ("estimate", "resnet18", "--checkpoint", "every-k:0", *CPU),
        "positive integer K",
    ),
    ("headroom 200%", ("estimate", "resnet18", "--headroom", "2", *CPU), "share of the device"),
    ("model typo", ("estimate", "resnt18", *CPU), "did you mean 'resnet18'"),
    ("name of 5000 chars", ("estimate", "a" * 5000), "longer than any name or path"),
    ("gpu typo", ("estimate", "resnet18", "--gpu", "h100-80gbb"), "did you mean 'h100-80gb'"),
    ("TPU", ("estimate", "resnet18", "--gpu", "tpu-v4"), "cannot estimate for tpu-v4"),
    (
        "plot to a missing folder",
        ("sweep", "resnet18", *CPU, "--plot", "{lab}/no/x.png"),
        "does not exist",
    ),
    ("plot as .jpg", ("sweep", "resnet18", *CPU, "--plot", "{lab}/x.jpg"), "ending in .png"),
    ("layers plot as .gif", ("layers", "resnet18", "--plot", "{lab}/x.gif"), "ending in .png"),
    ("size 1e400", ("size", "1e400"), "out of range"),
    ("size 0", ("size", "0"), "out of range"),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS]
)
def test_cli_refuses_in_one_line(
    lab: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code = cli_exit_code(*(a.replace("{lab}", str(lab)) for a in args))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert expected in lines[0]
    assert "unexpected" not in lines[0] and "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out


# -- correct answers on the command line --------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_exit_code("--version") == 0
    assert capsys.readouterr().out.strip() == f"memlens {memlens.__version__}"


def test_json_stays_json_when_the_model_prints(
    lab: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert cli_exit_code("estimate", f"{lab}/models.py:chatty", *MLP8, "--json") == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["kind"] == "estimate"
    assert "hello from forward" in captured.err
    assert "written to descriptor 1" in captured.err  # C code's stdout too


def test_budget_with_a_unit_is_bytes_of_that_unit(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli_exit_code("estimate", f"{lab}/models.py:mlp", *MLP8, "--budget", "16GiB", "--json") == 0
    )
    assert json.loads(capsys.readouterr().out)["device"]["capacity_bytes"] == 16 * 2**30


def test_tight_verdict_under_the_headroom(lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    est = memlens.estimate(f"{lab}/models.py:mlp", input_shape=(8,), device="cpu")
    budget = f"{int(est.total_bytes * 1.02)}B"  # 2% free: under the default 5%
    assert cli_exit_code("estimate", f"{lab}/models.py:mlp", *MLP8, "--budget", budget) == 0
    out = capsys.readouterr().out
    assert "TIGHT: fits with only" in re.sub(r"\s+", " ", out)
    assert (
        cli_exit_code(
            "estimate", f"{lab}/models.py:mlp", *MLP8, "--budget", budget, "--headroom", "1%"
        )
        == 0
    )
    assert "FITS with" in capsys.readouterr().out


def test_sweep_prints_a_line_per_trace_when_piped(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_exit_code("sweep", f"{lab}/models.py:mlp", *MLP8, "--batch", "1,2,4") == 0
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == ["trace 1", "trace 2", "trace 3"]
    assert cli_exit_code("sweep", f"{lab}/models.py:mlp", *MLP8, "--batch", "1,2", "--json") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["kind"] == "sweep"


# -- the API ----------------------------------------------------------------------------------


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.l1(x)))


API_ERRORS: list[tuple[str, Any, type[Exception], str]] = [
    (
        "estimate bacth=",
        lambda: memlens.estimate(_MLP(), device="cpu", bacth=64),
        memlens.WorkloadError,
        "did you mean 'batch'",
    ),
    (
        "measure bacth=",
        lambda: memlens.measure(_MLP(), device="cpu", bacth=64),
        memlens.WorkloadError,
        "did you mean 'batch'",
    ),
    (
        "fit optimzer=",
        lambda: memlens.fit(_MLP(), device="cpu", optimzer="sgd"),
        memlens.WorkloadError,
        "did you mean 'optimizer'",
    ),
    (
        "sweep bacth=",
        lambda: memlens.sweep(_MLP(), device="cpu", bacth=2),
        memlens.WorkloadError,
        "did you mean 'batch'",
    ),
    (
        "activations seqlen=",
        lambda: memlens.activations(_MLP(), seqlen=4),
        memlens.WorkloadError,
        "did you mean 'seq_len'",
    ),
    (
        "layers device=",
        lambda: memlens.layers(_MLP(), device="cpu"),
        memlens.WorkloadError,
        "no such option",
    ),
    (
        "inputs=5",
        lambda: memlens.estimate(_MLP(), device="cpu", inputs=5),
        memlens.ConfigError,
        "inputs= must be a tensor",
    ),
    (
        "inputs= and input_shape",
        lambda: memlens.estimate(_MLP(), device="cpu", inputs=torch.randn(2, 8), input_shape=(8,)),
        memlens.WorkloadError,
        "does not apply when inputs= are given",
    ),
    (
        "model=123",
        lambda: memlens.estimate(123, device="cpu"),
        memlens.UnknownModelError,
        "pass a model name",
    ),
    (
        "budget='16'",
        lambda: memlens.estimate(_MLP(), device="cpu", input_shape=(8,), budget="16"),
        memlens.ConfigError,
        "16GiB?",
    ),
    (
        "dataset_bytes='16'",
        lambda: memlens.estimate(_MLP(), device="cpu", input_shape=(8,), dataset_bytes="16"),
        memlens.WorkloadError,
        "16GiB?",
    ),
    (
        "wrong input width",
        lambda: memlens.estimate(_MLP(), device="cpu", inputs=torch.randn(2, 9)),
        memlens.TraceError,
        "must have same reduction dim",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "expected"), [c[1:] for c in API_ERRORS], ids=[c[0] for c in API_ERRORS]
)
def test_api_refuses(call: Any, error: type[Exception], expected: str) -> None:
    with pytest.raises(error, match=re.escape(expected)):
        call()


@pytest.mark.parametrize(
    "inputs",
    [
        torch.randn(4, 8),
        (torch.randn(4, 8),),
        [torch.randn(4, 8)],
        {"x": torch.randn(4, 8)},
        lambda: torch.randn(4, 8),
    ],
    ids=["tensor", "tuple", "list", "dict", "callable"],
)
def test_api_inputs_forms_give_the_batch_they_hold(inputs: Any) -> None:
    expected = memlens.estimate(_MLP(), device="cpu", input_shape=(8,), batch=4).peak_bytes
    assert memlens.estimate(_MLP(), device="cpu", inputs=inputs).peak_bytes == expected


def test_measure_refuses_a_step_larger_than_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from memlens.measurement import guard

    monkeypatch.setattr(guard, "available_bytes", lambda kind: 1024)
    with pytest.raises(memlens.MeasureError, match="free: a real run would swap"):
        memlens.measure(_MLP(), device="cpu", input_shape=(8,))
    assert memlens.measure(_MLP(), device="cpu", input_shape=(8,), force=True).peak_bytes > 0
    from memlens.measurement.compare import compare_with_run

    est = memlens.estimate(_MLP(), device="cpu", input_shape=(8,))
    with pytest.raises(memlens.MeasureError, match="memlens measure --force"):
        compare_with_run(_MLP(), est)


def test_result_reprs_are_short_and_summary_is_the_long_form() -> None:
    est = memlens.estimate(_MLP(), device="cpu", input_shape=(8,), batch=2)
    sweep = memlens.sweep(_MLP(), device="cpu", input_shape=(8,), batches=[1, 2])
    for result in (est, est.timeline, sweep, memlens.layers(_MLP(), input_shape=(8,))):
        assert len(repr(result)) < 1000 and "\n" not in repr(result)
    assert "total" in est.summary() and "batch 2" in sweep.summary()
    assert repr(est).startswith("Estimate(model='_MLP'")


def test_reading_a_hostile_index_opens_nothing_outside(lab: Path) -> None:
    from memlens.sources.checkpoint import summarize

    for folder in ("abs_index", "dotdot_index", "link_index", "link_folder"):
        with pytest.raises(memlens.HeaderError) as info:
            summarize(lab / folder)
        assert SECRET not in str(info.value)


def test_every_catalogue_case_is_an_ordinary_error() -> None:
    assert len(CLI_ERRORS) + len(API_ERRORS) + 5 + 9 >= 60
    assert all(issubclass(e, MemlensError) for _, _, e, _ in API_ERRORS)
