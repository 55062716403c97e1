"""Host memory: the data pipeline (closed form) and optimizer offload; the strategy flags of
the CLI."""

from __future__ import annotations

import json
import sys

import pytest
from torch import nn

import memlens
from memlens.report.json import to_json
from memlens.strategies.data import host_memory
from memlens.workload import Workload


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 10))


N_PARAMS = 128 * 256 + 256 + 256 * 10 + 10


def _rows(host) -> dict[str, int]:
    return {r.what: r.bytes for r in host.rows}


def test_data_pipeline_formulas():
    w = Workload(
        batch=32,
        dataset_size=1000,
        sample_shape=(3, 32, 32),
        num_workers=4,
        prefetch_factor=3,
        pin_memory=True,
    )
    batch = 32 * 3 * 32 * 32 * 4
    rows = _rows(host_memory(w, input_bytes=0))
    assert rows["data set in memory"] == 1000 * 3 * 32 * 32 * 4
    assert rows["batches prefetched by workers"] == 4 * 3 * batch
    assert rows["batch in use by the step"] == batch
    assert rows["batch being pinned"] == batch
    assert host_memory(Workload(), input_bytes=10) is None  # nothing asked


def test_host_table_from_the_traced_batch():
    est = memlens.estimate(
        _mlp, device="cpu", batch=16, input_shape=(128,), dataset_bytes="1GiB", num_workers=2
    )
    batch = 16 * 128 * 4  # the traced inputs (no targets for a factory model)
    rows = _rows(est.host)
    assert rows == {
        "data set in memory": 2**30,
        "batches prefetched by workers": 2 * 2 * batch,  # DataLoader's default prefetch_factor
        "batch in use by the step": batch,
    }
    assert to_json(est)["host"]["total_bytes"] == est.host.total_bytes


def test_offload_moves_state_to_the_host():
    kw = {"batch": 16, "input_shape": (128,), "optimizer": "adam", "device": "cuda"}
    on_device = memlens.estimate(_mlp, **kw)
    offloaded = memlens.estimate(_mlp, offload_optimizer=True, **kw)
    # Adam's two fp32 moments, each rounded up to 512 B by the caching allocator (the last
    # bias's 40 B take 512); its `step` counters are CPU tensors (torch/optim/adam.py)
    moments = 2 * 4 * (128 * 256 + 256 + 256 * 10) + 2 * 512
    assert on_device.breakdown["optimizer_state"] == moments
    assert offloaded.breakdown.get("optimizer_state", 0) == 0
    host = _rows(offloaded.host)["offloaded optimizer"]
    # fp32 masters, fp32 gradient buffers and Adam's two fp32 moments: 16 bytes per element,
    # plus the update's temporaries of one tensor at a time and the step counters
    assert 16 * N_PARAMS <= host <= 16 * N_PARAMS + 8 * 128 * 256 + 4 * 4
    assert offloaded.peak_bytes < on_device.peak_bytes


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"offload_optimizer": True, "device": "cpu"}, "offload_optimizer"),
        ({"prefetch_factor": 2}, "prefetch_factor"),
        ({"num_workers": -1}, "num_workers"),
        ({"dataset_bytes": "lots"}, "dataset_bytes"),
        ({"sample_shape": "3xax3"}, "sample_shape"),
        ({"pin_memory": "yes"}, "pin_memory"),
    ],
)
def test_bad_data_values_name_the_field(kwargs, field):
    with pytest.raises(memlens.WorkloadError) as info:
        memlens.estimate(_mlp, **{"device": "cuda", **kwargs})  # refused before any trace
    assert info.value.field == field


def _cli(*args: str) -> int:
    from memlens.cli import main

    argv = sys.argv
    sys.argv = ["memlens", *args]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = argv
    return info.value.code


def test_cli_strategy_flags_reach_the_estimate(capsys):
    from typer.testing import CliRunner

    from memlens.cli import app

    args = ["estimate", "squeezenet1_1", "--device", "cpu", "--input-shape", "3x64x64"]
    args += ["--checkpoint", "every-k:2", "--grad-accum", "2", "--optimizer", "lion"]
    args += ["--num-workers", "2", "--pin-memory", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["workload"]["checkpoint"] == "every-k:2"
    assert data["effective_batch"] == 2 and data["strategies"]["checkpointed"]
    assert data["compute"]["recompute_flops"] > 0
    assert {r["what"] for r in data["host"]["rows"]} >= {"batch being pinned"}


def test_cli_bad_flag_is_one_line(capsys):
    assert _cli("estimate", "resnet18", "--device", "cpu", "--quantize", "int3") == 2
    err = capsys.readouterr().err
    assert "quantize" in err and "int8" in err and "Traceback" not in err
