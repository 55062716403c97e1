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
from memlens.measurement.cpu import _MARK_BYTES, _native_stderr_silenced, allocations
from memlens.measurement.real import build_real
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import resolve_target
from memlens.workload import Workload


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
        step.run(workload)
        for _ in range(steps):
            marker = torch.empty(_MARK_BYTES, dtype=torch.uint8)
            del marker
            step.run(workload)
    records = _totals(prof)
    marks = [
        i
        for i in range(len(records) - 1)
        if records[i][0] == _MARK_BYTES and records[i + 1][0] == -_MARK_BYTES
    ]
    spans = zip(marks, [*marks[1:], len(records)], strict=True)
    return [max(t for _, t in records[a + 1 : b]) for a, b in spans]


def _totals(prof: profile) -> list[tuple[int, int]]:
    """(size, bytes alive) after each allocation record of the session, in time order, counted
    from the session's start (the allocator's running total outlives a session:
    ``ProfiledCPUMemoryReporter`` keeps it), with frees on gloo's threads found
    (:func:`memlens.measurement.cpu.allocations`)."""
    records = allocations(prof)
    start = records[0][2] - records[0][1]
    return [(size, total - start) for _, size, total in records]


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

    The steps of one rank can still differ, and only upwards: gloo's worker threads hold each
    collective's work (and the tensors it references: an all-gather's output, a
    tensor-parallel all-reduce's result, DDP's broadcast at construction) until they return
    to their loop (``ProcessGroupGloo::runLoop`` resets ``workInProgress_`` after
    ``execute``). When such a thread drops a tensor's last reference, the free happens on a
    thread the profiler does not follow, and ``ProfiledCPUMemoryReporter::Delete``
    (``c10/core/CPUAllocator.cpp``, guarded by the thread-local ``memoryProfilingEnabled()``)
    never subtracts it from the running total; :func:`_totals` subtracts it when its address
    is handed out again, which may be later than the real free. The least of a rank's steps
    is the one least affected.
    """
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
