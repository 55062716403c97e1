"""The real per-rank peak of a step under a parallel layout, on CPU: ``world_size``
processes on a real ``gloo`` process group, each building the real model, applying the same
:class:`~memlens.distributed.strategies.ParallelStrategies` the trace applies (and, for DDP,
the real :class:`~torch.nn.parallel.DistributedDataParallel`), and profiling the CPU
allocator's own records (as :mod:`memlens.measurement.cpu` does) from before the model is
built: the running total then counts every byte the rank holds, including what the parallel
code keeps outside the model's tensors (DDP's buckets, FSDP's padded shards)."""

from __future__ import annotations

import gc
import os
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.profiler import ProfilerActivity, profile

from memlens.distributed.strategies import ParallelStrategies, check_traceable
from memlens.distributed.world import meshes
from memlens.measurement.cpu import _MARK_BYTES, _allocations, _native_stderr_silenced
from memlens.measurement.real import build_real
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import resolve_target
from memlens.workload import Workload


def _settle() -> None:
    """Let what an earlier step or the setup left behind go before a step: cyclic garbage (a
    real loop's collector frees it too), and the last work each gloo worker thread still
    holds with its tensors (``ProcessGroupGloo::runLoop`` drops it only when the thread comes
    back to its loop): barriers pass through the worker threads."""
    gc.collect()
    for _ in range(4):
        dist.barrier()


def _peaks(model: str, workload: Workload, steps: int) -> list[int]:
    """The bytes allocated since the model was built and alive at the peak of each of
    ``steps`` steady steps (after a warm-up step)."""
    from memlens._setup import model_spec

    spec = model_spec(model, workload)
    layout = workload.layout
    mesh = meshes(layout)
    torch.manual_seed(0)
    gc.collect()  # the previous layout's modules (FSDP's hooks hold reference cycles)
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        strategies = ParallelStrategies(
            WorkloadStrategies(workload, resolve_target("cpu")), workload, mesh, model_ddp=False
        )
        step = build_real(spec, workload, strategies, "cpu")
        if layout.ddp:
            step.model = torch.nn.parallel.DistributedDataParallel(
                step.model,
                bucket_cap_mb=workload.bucket_cap_mb,
                gradient_as_bucket_view=workload.gradient_as_bucket_view,
            )
        _settle()
        step.run(workload)
        for _ in range(steps):
            _settle()
            marker = torch.empty(_MARK_BYTES, dtype=torch.uint8)
            del marker
            step.run(workload)
    records = _allocations(prof)
    # the allocator's running total outlives a profiling session (ProfiledCPUMemoryReporter
    # in c10/core/CPUAllocator.cpp keeps it across sessions): count from this session's start
    start = records[0][2] - records[0][1]
    marks = [
        i
        for i in range(len(records) - 1)
        if records[i][1] == _MARK_BYTES and records[i + 1][1] == -_MARK_BYTES
    ]
    spans = zip(marks, [*marks[1:], len(records)], strict=True)
    return [max(t for _, _, t in records[a + 1 : b]) - start for a, b in spans]


def _rank(
    rank: int, model: str, workloads: list[Workload], steps: int, init: str, out: Any
) -> None:
    torch.set_num_threads(1)
    world = workloads[0].layout.world_size
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        for i, workload in enumerate(workloads):
            out[i, rank] = _peaks(model, workload, steps)
    finally:
        dist.destroy_process_group()


def measure_ranks(model: str, workloads: list[Workload], steps: int = 5) -> list[list[list[int]]]:
    """For each workload (all of one world size), each rank's peak bytes in each of ``steps``
    steady steps, measured for real in one set of processes; ``model`` is a name or spec that
    each process resolves itself.

    Each step starts after a garbage collection. The steps of one rank can still differ:
    gloo's worker thread holds each collective's work (and the tensors it references: an
    all-gather's output, a tensor-parallel all-reduce's result) until it returns to its loop
    (``ProcessGroupGloo::runLoop`` resets ``workInProgress_`` after ``execute``), which may
    be after the main thread has moved on; the least of the steps is the peak without such a
    late release, the others exceed it by the buffers released late."""
    for workload in workloads:
        check_traceable(workload)
    world = workloads[0].layout.world_size
    if any(w.layout.world_size != world for w in workloads):
        raise ValueError("the workloads measured together need one world size")
    with tempfile.TemporaryDirectory() as tmp, mp.Manager() as manager:
        out = manager.dict()
        init = os.path.join(tmp, "init")
        mp.spawn(_rank, args=(model, workloads, steps, init, out), nprocs=world, join=True)
        return [[out[i, r] for r in range(world)] for i in range(len(workloads))]
