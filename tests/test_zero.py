"""ZeRO model states: the paper's formulas, DeepSpeed's estimators (reimplemented from
deepspeed/runtime/zero/stage_1_and_2.py and stage3.py) and the buffers its optimizers
allocate, checked by hand."""

from __future__ import annotations

import json

import pytest

from memlens import Workload, WorkloadError
from memlens.analytic.zero import (
    ZeroConfig,
    deepspeed_states,
    estimate_zero2_model_states_mem_needs,
    estimate_zero3_model_states_mem_needs,
    zero_paper_bytes,
)

P = 7_500_000_000  # the paper's example: 7.5B parameters on 64 GPUs (Figure 1)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (0, 16 * P),  # baseline: (2 + 2 + K) P with K = 12
        (1, 4 * P + 12 * P // 64),  # P_os
        (2, 2 * P + 14 * P // 64),  # P_os+g
        (3, 16 * P // 64),  # P_os+g+p
    ],
)
def test_zero_paper_formulas(stage: int, expected: int) -> None:
    assert zero_paper_bytes(P, stage, 64) == expected


def test_zero_paper_figure_1_values() -> None:
    gb = [zero_paper_bytes(P, s, 64) / 1e9 for s in range(4)]
    assert gb == [120.0, 31.40625, 16.640625, 1.875]  # the figure: 120, 31.4, 16.6, 1.9 GB


def test_deepspeed_estimators_by_hand() -> None:
    # stage 2, no offload: 2P + 18P/N on the GPU, 4P per local GPU x 1.5 on the host
    assert estimate_zero2_model_states_mem_needs(1000, 8, 1, cpu_offload=False) == (
        48000,
        2000 + 18000 // 8,
    )
    # stage 2, offload: 2P on the GPU, max(4N, 16) P x 1.5 on the host
    assert estimate_zero2_model_states_mem_needs(1000, 8, 2) == (96000, 2000)
    # stage 3, nothing offloaded: 4 x largest layer + 18P/N; zero_init: 4 x largest x local
    assert estimate_zero3_model_states_mem_needs(
        1600, 100, 4, 2, cpu_offload=False, cpu_offload_params=False
    ) == (2400, 400 + 18 * 1600 // 8, 400)
    # stage 3, optimizer and parameters offloaded: the largest layer only on the GPU
    assert estimate_zero3_model_states_mem_needs(1600, 100, 4, 2) == (21600, 400, 400)


def test_deepspeed_stage2_buffers_equal_its_estimator() -> None:
    """Without reduce buckets, what stage 2 allocates is its estimator's 2P + 18P/N."""
    config = ZeroConfig(stage=2, contiguous_gradients=False)
    states = deepspeed_states(8_000, 100, 8, config)
    _, gpu = estimate_zero2_model_states_mem_needs(8_000, 8, 1, cpu_offload=False)
    assert states.device_bytes == gpu
    assert states.host_bytes == 0


def test_deepspeed_buckets_and_offload() -> None:
    p, n, largest = 80_000, 8, 1_000
    # stage 2: grads_in_partition (2P/N) and two reduce buckets under overlap_comm
    ds = ZeroConfig(stage=2, reduce_bucket_size=5_000, overlap_comm=True)
    states = deepspeed_states(p, largest, n, ds)
    assert states.device == {
        "parameters": 2 * p,
        "optimizer_state": 12 * p // n,
        "gradients": 2 * p // n + 4 * p // n,
        "collectives": 2 * 2 * 5_000,
    }
    # offload: masters, Adam, the fp32 gradient partition and a bit16 staging copy on the host;
    # the device keeps the parameters, one largest-parameter gradient buffer and one bucket
    off = deepspeed_states(p, largest, n, ZeroConfig(stage=2, offload_optimizer="cpu"))
    assert off.device == {"parameters": 2 * p, "gradients": 2 * largest, "collectives": 2 * p}
    assert off.host == {
        "optimizer_state": 12 * p // n,
        "gradients": 4 * p // n,
        "parameters": 2 * p // n,
    }
    # stage 3 with parameters offloaded: only the live gathered parameters stay
    s3 = ZeroConfig(stage=3, offload_param="cpu", offload_optimizer="cpu", reduce_bucket_size=0)
    states = deepspeed_states(p, largest, n, s3, live_params=3_000)
    assert states.device == {"parameters": 2 * 3_000}
    assert states.host == {
        "parameters": 2 * p // n,
        "optimizer_state": 12 * p // n,
        "gradients": 2 * p // n + 4 * p // n,
    }
    # stage 1 keeps whole bit16 gradients until the step
    s1 = deepspeed_states(p, largest, n, ZeroConfig(stage=1, contiguous_gradients=False))
    assert s1.device_bytes == 2 * p + 2 * p + 16 * p // n


def test_zero_config_parsing(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps(
            {
                "train_batch_size": 8,
                "zero_optimization": {
                    "stage": 3,
                    "offload_param": {"device": "cpu", "pin_memory": True},
                    "stage3_max_live_parameters": 1e9,
                    "prefetch_bucket_size": "5e7",
                    "reduce_scatter": True,
                },
            }
        )
    )
    config = ZeroConfig.parse(str(path))
    assert (config.stage, config.offload_param, config.stage3_prefetch_bucket_size) == (
        3,
        "cpu",
        50_000_000,
    )
    assert config.overlap  # DeepSpeed's dynamic default: on for stage 3
    assert ZeroConfig.parse("stage=2,reduce_bucket_size=2e8").reduce_bucket_size == 200_000_000
    assert not ZeroConfig.parse(2).overlap
    w = Workload(deepspeed="stage=3,offload_optimizer=cpu", dp=8)
    assert w.deepspeed.offload_optimizer == "cpu" and w.closed_form


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("stage=4", "stage must be 1, 2 or 3"),
        ("stage=2,offload_param=cpu", "offload_param needs stage 3"),
        ("stage=2,bucket=3", "unknown zero_optimization key"),
        ("stage=2,reduce_bucket_size=-1", "non-negative integer"),
        ("three", "stage=3,offload_param=cpu"),
    ],
)
def test_zero_config_refusals(value: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        Workload(deepspeed=value)


def test_deepspeed_replaces_fsdp() -> None:
    with pytest.raises(WorkloadError, match="replaces --fsdp"):
        Workload(deepspeed="stage=3", fsdp="full", dp=2)


def test_against_deepspeed_when_installed() -> None:
    """The reimplemented estimators equal DeepSpeed's own (the ``deepspeed`` extra)."""
    stage12 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    for offload in (True, False):
        args = (7_000_000_000, 8, 4, offload)
        assert estimate_zero2_model_states_mem_needs(*args) == tuple(
            stage12.estimate_zero2_model_states_mem_needs(*args)
        )
        for params in (True, False):
            args3 = (7_000_000_000, 500_000_000, 8, 4, offload, params, True)
            assert estimate_zero3_model_states_mem_needs(*args3) == tuple(
                stage3.estimate_zero3_model_states_mem_needs(*args3)
            )
