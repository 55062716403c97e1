"""``memlens fit --gpus``: the layouts that fit N GPUs (closed form), and the closed-form
answers of ``memlens estimate`` (routing, tables, JSON)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memlens.analytic.estimate import analytic_estimate, closed_form_reason
from memlens.cli import app
from memlens.plan.layouts import fit_layouts
from memlens.workload import Workload

runner = CliRunner()


def test_plan_finds_fitting_layouts_with_their_largest_micro_batch() -> None:
    plan = fit_layouts("llama-3-70b", 64, device="h100-80gb", precision="bf16", seq_len=4096)
    assert plan.fits and plan.considered > len(plan.fits)
    for row in plan.fits:
        assert row.dp * row.tp * row.pp * row.cp == 64
        assert row.peak_bytes <= plan.device.capacity_bytes
    best = plan.fits[0]
    fields = dict(
        dp=best.dp,
        tp=best.tp,
        pp=best.pp,
        cp=best.cp,
        fsdp=best.sharding.removeprefix("fsdp ") if best.sharding.startswith("fsdp") else "none",
        checkpoint=best.checkpoint,
        sequence_parallel=best.tp > 1,
        seq_len=4096,
        precision="bf16",
        device="h100-80gb",
    )
    if best.pp > 1:
        fields["microbatches"] = best.microbatches
    at = analytic_estimate("llama-3-70b", batch=best.micro_batch, **fields)
    above = analytic_estimate("llama-3-70b", batch=best.micro_batch + 1, **fields)
    assert at.fits and not above.fits  # the largest micro-batch, exactly
    bubbles = [r.bubble for r in plan.fits]
    assert bubbles == sorted(bubbles, key=lambda b: round(b, 2))


def test_no_layout_fits_a_small_cluster() -> None:
    plan = fit_layouts("llama-3.1-405b", 2, device="rtx-4090", precision="bf16")
    assert plan.fits == []


def test_routing() -> None:
    base = Workload(fsdp="full", world_size=64)
    assert "70.6B parameters" in closed_form_reason("llama-3-70b", base)
    assert closed_form_reason("llama-3-70b", base.with_(analytic=False)) is None
    assert closed_form_reason("llama-3-8b", base) is None  # small enough to trace
    assert closed_form_reason("gpt2", Workload(analytic=True)) == "closed form (--analytic)"


def test_cli_estimate_closed_form_json() -> None:
    result = runner.invoke(
        app,
        [
            "estimate",
            "gpt-3-175b",
            "--tp",
            "8",
            "--pp",
            "8",
            "--dp",
            "16",
            "--microbatches",
            "8",
            "--seq-len",
            "2048",
            "--precision",
            "bf16",
            "--deepspeed",
            "stage=1",
            "--gpu",
            "a100-80gb",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["kind"] == "analytic-estimate"
    assert "DeepSpeed" in doc["method"]
    assert len(doc["stages"]) == 8 and doc["layout"]["world_size"] == 1024
    assert doc["workload"]["deepspeed"]["stage"] == 1


def test_cli_fit_gpus_table() -> None:
    result = runner.invoke(
        app,
        ["fit", "llama-3-8b", "--gpus", "8", "--gpu", "h100-80gb", "--precision", "bf16"],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "Layouts that fit" in result.output and "closed form" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "selective"], "add --analytic"),
        (["--deepspeed", "stage=3", "--fsdp", "full", "--dp", "2"], "replaces --fsdp"),
    ],
)
def test_cli_refusals_are_one_line(args: list[str], message: str, capsys, monkeypatch) -> None:
    from memlens.cli import main  # errors are formatted by main(), the console script

    monkeypatch.setattr("sys.argv", ["memlens", "estimate", "gpt2", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_fit_without_gpus_refuses_the_closed_form() -> None:
    import memlens

    with pytest.raises(memlens.ConfigError, match="fit --gpus N"):
        memlens.fit("gpt2", deepspeed="stage=2", dp=2, device="t4")


def test_deepspeed_offload_reports_host_memory() -> None:
    kw = dict(dp=64, precision="bf16", seq_len=4096, checkpoint="blocks", device="h100-80gb")
    on_gpu = analytic_estimate("llama-3-70b", deepspeed="stage=3", **kw).worst
    off = analytic_estimate(
        "llama-3-70b", deepspeed="stage=3,offload_optimizer=cpu,offload_param=cpu", **kw
    ).worst
    assert on_gpu.host_bytes == 0 and off.host_bytes > 0
    assert "optimizer_state" not in off.breakdown
    assert off.peak_bytes < on_gpu.peak_bytes


def test_context_parallel_splits_the_sequence() -> None:
    kw = dict(precision="bf16", seq_len=16384, fsdp="full", checkpoint="blocks")
    one = analytic_estimate("llama-3-8b", dp=8, **kw).worst.breakdown["activations"]
    two = analytic_estimate("llama-3-8b", dp=4, cp=2, **kw).worst.breakdown["activations"]
    assert two < 0.6 * one


def test_cli_estimate_closed_form_table() -> None:
    result = runner.invoke(
        app,
        ["estimate", "llama-3-70b", "--fsdp", "full", "--world-size", "64", "--gpu", "h100-80gb"],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert "Per GPU, by pipeline stage" in text
    assert "70.6B parameters take minutes to trace" in text
    assert "worst GPU (stage 0)" in text and "fits" in text
