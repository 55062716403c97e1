"""CPU ground truth: the CPU allocator's own running total, from the profiler's records.

With ``profile_memory=True`` every allocation and free through PyTorch's CPU allocator is
reported with the allocator's running total (``total_allocated``); that total counts only
memory allocated while profiling, so the peak of one step is the bytes alive before the step
plus the largest rise of the running total during it. Allocations made by kernels for their
own use (convolution reorders, im2col buffers) are included: they go through the allocator.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile

from memlens.measurement.real import RealStep, live_bytes
from memlens.measurement.result import Measurement
from memlens.workload import Workload


def _allocations(prof: profile) -> list[tuple[int, int, int]]:
    """(time ns, size, running total) of each allocation record, in time order."""
    out: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    alloc = torch._C._profiler._EventType.Allocation
    while stack:
        node = stack.pop()
        if node.tag == alloc:
            f = node.extra_fields
            out.append((node.start_time_ns, f.alloc_size, f.total_allocated))
        stack.extend(node.children)
    out.sort(key=lambda r: r[0])
    return out


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Kineto prints start/stop lines and GPU probes to the process's stderr (fd 2) from C++;
    route fd 2 to /dev/null while profiling so the user sees only memlens's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _profiled_rise(step: RealStep, workload: Workload) -> int:
    def go() -> None:
        step.run(workload)

    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        go()
    records = _allocations(prof)
    if not records:
        return 0
    start = records[0][2] - records[0][1]  # running total before the first record
    return max(0, max(total for _, _, total in records) - start)


def measure_cpu(step: RealStep, workload: Workload) -> Measurement:
    """Warm up, time one step, then profile one step and read the allocator's peak."""

    def go() -> None:
        step.run(workload)

    first_baseline = live_bytes(step)
    first_rise = _profiled_rise(step, workload)  # the warm-up step (creates optimizer state)
    t0 = time.perf_counter()
    go()
    seconds = time.perf_counter() - t0
    baseline = live_bytes(step)
    peak = baseline + _profiled_rise(step, workload)
    return Measurement(
        device="cpu",
        peak_bytes=peak,
        reserved_peak_bytes=peak,
        baseline_bytes=baseline,
        step_seconds=seconds,
        first_step_peak_bytes=first_baseline + first_rise if workload.training else None,
        device_name="cpu",
    )
