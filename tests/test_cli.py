"""The CLI: options generated from the schema, exit codes, one-line errors with flags, JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import memlens
from memlens.cli import app
from memlens.report.json import SCHEMA_VERSION
from memlens.workload import flag, options

runner = CliRunner()


def _run(*args: str):
    import sys

    from memlens.cli import main  # errors are formatted by main(), the console script

    argv = sys.argv
    sys.argv = ["memlens", *args]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = argv
    return info.value.code


def test_unknown_model_suggests_close_names(capsys):
    assert _run("estimate", "resnt50", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnt50'" in err and "resnet50" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_unknown_model_api_carries_suggestions():
    with pytest.raises(memlens.UnknownModelError) as info:
        memlens.estimate("mobilenetv2x", device="cpu")
    assert "mobilenet_v2" in info.value.suggestions


def test_bad_batch_is_refused(capsys):
    assert _run("estimate", "resnet18", "--batch", "0", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "batch" in err and "positive" in err


def test_unknown_gpu_suggests(capsys):
    assert _run("estimate", "resnet18", "--gpu", "h10") == 2
    assert "h100" in capsys.readouterr().err.lower()


def test_json_schema():
    result = runner.invoke(
        app, ["estimate", "resnet18", "--batch", "2", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["schema_version"] == SCHEMA_VERSION and data["kind"] == "estimate"
    for key in (
        "model",
        "workload",
        "num_params",
        "peak_bytes",
        "reserved_peak_bytes",
        "total_bytes",
        "breakdown",
        "budget",
        "peak",
        "fits",
        "unknowns",
    ):
        assert key in data
    assert data["num_params"] == 11689512
    assert sum(data["breakdown"].values()) == data["peak_bytes"]
    assert sum(data["budget"].values()) == data["total_bytes"]
    assert data["peak"]["phase"] in ("forward", "loss", "backward", "optimizer")
    assert data["workload"]["batch"] == 2 and data["workload"]["mode"] == "train"


def test_budget_table_and_verdict():
    result = runner.invoke(
        app, ["estimate", "resnet18", "--batch", "2", "--gpu", "t4", "--optimizer", "sgd"]
    )
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "total used" in result.output
    assert "FITS with" in result.output and "peak in" in result.output


def test_does_not_fit_verdict():
    result = runner.invoke(app, ["estimate", "resnet18", "--batch", "64", "--budget", "256MiB"])
    assert result.exit_code == 0, result.output
    assert "DOES NOT FIT" in result.output


def test_devices_lists_catalog():
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 0
    for name in ("v100-16gb", "a100-40gb", "h100-80gb", "h200", "t4"):
        assert name in result.output


MLP = "tests/conftest.py:tiny_mlp"
COMMANDS = ("estimate", "measure", "fit", "sweep", "layers")


def _flags(command: str) -> set[str]:
    """Every flag of a command, as click parses them."""
    import typer.main

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {name for p in click_command.params for name in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_that_applies_is_a_flag(command):
    flags = _flags(command)
    for f, _, _ in options(command):
        for name in flag(f.name).split("/"):
            assert name in flags, f"{command} lacks {name}"
    assert "--json" in flags


def test_commands_take_the_strategy_and_data_options():
    assert {"--checkpoint", "--lora", "--offload-optimizer", "--grad-accum"} <= _flags("fit")
    assert {"--checkpoint", "--lora", "--quantize", "--gpu", "--budget"} <= _flags("sweep")
    assert {"--num-workers", "--pin-memory", "--dataset-bytes"} <= _flags("measure")
    assert not {"--optimizer", "--grad-accum", "--pin-memory", "--gpu"} & _flags("layers")


def test_field_errors_name_the_flag(capsys):
    args = ("estimate", MLP, "--input-shape", "4", "--device", "cpu")
    assert _run(*args, "--optimizer", "lion", "--optimizer-impl", "fused") == 2
    err = capsys.readouterr().err
    assert "invalid --optimizer-impl 'fused': lion allows: auto, for-loop" in err
    assert _run(*args, "--prefetch-factor", "2") == 2
    assert "invalid --prefetch-factor 2: needs --num-workers > 0" in capsys.readouterr().err
    assert _run(*args, "--lora", "r=0") == 2
    assert "invalid --lora r=0" in capsys.readouterr().err
    assert _run(*args, "--offload-optimizer") == 2
    assert "invalid --offload-optimizer: moves state from a CUDA" in capsys.readouterr().err
    assert _run("sweep", MLP, "--batch", "1,x", "--device", "cpu") == 2
    assert "invalid --batch '1,x'" in capsys.readouterr().err
    assert _run("layers", MLP, "--input-shape", "4", "--sort", "size") == 2
    assert (
        "invalid --sort 'size': allowed: params, activations, saved, macs"
        in capsys.readouterr().err
    )


def test_api_refuses_unknown_keywords_with_the_closest_field():
    with pytest.raises(memlens.WorkloadError, match="did you mean 'grad_accum'"):
        memlens.estimate(MLP, device="cpu", grad_acum=2)
    with pytest.raises(memlens.WorkloadError, match="does not apply to layers"):
        memlens.layers(MLP, optimizer="sgd")


def test_strategy_and_data_options_reach_the_workload():
    common = [MLP, "--input-shape", "4", "--device", "cpu", "--json"]
    fit = runner.invoke(
        app, ["fit", *common, "--budget", "1MiB", "--max-batch", "4", "--checkpoint", "blocks"]
    )
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.output)["at_max"]["workload"]["checkpoint"] == "blocks"
    sweep = runner.invoke(app, ["sweep", *common, "-b", "1,2", "--freeze", "0.*"])
    assert sweep.exit_code == 0, sweep.output
    rows = json.loads(sweep.output)["estimates"]
    assert [r["workload"]["freeze"] for r in rows] == [["0.*"], ["0.*"]]
    assert [r["trainable_params"] for r in rows] == [8, 8]  # Linear(3->2) alone: 3*2 + 2
    measure = runner.invoke(app, ["measure", *common, "--inference", "--num-workers", "2"])
    assert measure.exit_code == 0, measure.output
    assert json.loads(measure.output)["kind"] == "measurement"


def test_commands_import_nothing_heavy():
    code = (
        "import sys, memlens.cli\n"
        "heavy = ('torch', 'memlens.engine', 'memlens.strategies', 'memlens.sources',"
        " 'memlens._estimate', 'memlens.plan')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
