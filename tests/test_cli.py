"""The CLI: exit codes, one-line errors, JSON schema, devices."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import memlens
from memlens.cli import app

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
    assert data["schema_version"] == 1
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
