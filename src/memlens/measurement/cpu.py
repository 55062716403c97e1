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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile

from memlens.measurement.real import RealStep, live_bytes
from memlens.measurement.result import Measurement
from memlens.workload import Workload


def allocations(prof: profile) -> list[tuple[int, int, int]]:
    """(time ns, size, running total) of each allocation record, in time order.

    The total is corrected for frees made on threads the profiler does not follow (gloo's
    workers drop the last reference to a collective's tensors):
    ``ProfiledCPUMemoryReporter::Delete`` (``c10/core/CPUAllocator.cpp``) guards its
    bookkeeping with the thread-local ``memoryProfilingEnabled()``, so such a free is never
    subtracted. A block whose address the allocator hands out again was freed by then: it is
    subtracted at that reuse, the latest it can have been freed (an upper bound). Where every
    free is seen (one thread), nothing changes."""
    raw: list[tuple[int, int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    alloc = torch._C._profiler._EventType.Allocation
    while stack:
        node = stack.pop()
        if node.tag == alloc:
            f = node.extra_fields
            raw.append((node.start_time_ns, f.alloc_size, f.total_allocated, f.ptr))
        stack.extend(node.children)
    raw.sort(key=lambda r: r[0])
    live: dict[int, int] = {}
    unseen = 0  # bytes freed on other threads, found so far
    out: list[tuple[int, int, int]] = []
    for time_ns, size, total, ptr in raw:
        if size > 0:
            unseen += live.pop(ptr, 0)
            live[ptr] = size
        else:
            live.pop(ptr, None)
        out.append((time_ns, size, total - unseen))
    return out


def allocator_peak(fn: Callable[[], object]) -> int:
    """Largest rise of the CPU allocator's running total during one call of ``fn``, after a
    warm-up call (oneDNN primitive creation, lazy initialisation)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = allocations(prof)
    if not records:
        return 0
    return max(total for _, _, total in records) - (records[0][2] - records[0][1])


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


#: The size of the marker allocation between the two profiled steps (a prime: no real
#: tensor of this many bytes is expected).
_MARK_BYTES = 7919


def _profiled_steps(step: RealStep, workload: Workload) -> tuple[int, int, int]:
    """Profile the warm-up step and the steady-state step in one session: (warm-up rise,
    bytes alive before the steady step, steady rise).

    One session, because the CPU allocator's memory reporter
    (``c10/core/CPUAllocator.cpp`` ``ProfiledCPUMemoryReporter::Delete``) drops the free of
    a block allocated before profiling started ("Memory block of unknown size was allocated
    before the profiling started"): a steady step that frees the previous step's gradients
    (Lightning's ``zero_grad`` before backward, a user's step that zeroes them first) would
    otherwise be counted as growing by them. A marker allocation splits the two steps.
    """
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step.run(workload)
        marker = torch.empty(_MARK_BYTES, dtype=torch.uint8)
        del marker
        baseline = live_bytes(step)
        step.run(workload)
    records = allocations(prof)
    split = next(
        (
            i
            for i in range(len(records) - 1)
            if records[i][1] == _MARK_BYTES and records[i + 1][1] == -_MARK_BYTES
        ),
        None,
    )
    if split is None:
        raise RuntimeError("the profiler lost the marker between the two steps")
    first, second = records[:split], records[split + 2 :]
    first_rise = 0
    if first:
        start = first[0][2] - first[0][1]  # running total before the first record
        first_rise = max(0, max(total for _, _, total in first) - start)
    middle = records[split + 1][2]  # the running total after the marker's free
    rise = max(0, max((total for _, _, total in second), default=middle) - middle)
    return first_rise, baseline, rise


def measure_cpu(step: RealStep, workload: Workload) -> Measurement:
    """Profile the warm-up step and the steady step, time a third, and read the
    allocator's peaks."""
    first_baseline = live_bytes(step)
    first_rise, baseline, rise = _profiled_steps(step, workload)
    t0 = time.perf_counter()
    step.run(workload)
    seconds = time.perf_counter() - t0
    peak = baseline + rise
    return Measurement(
        device="cpu",
        peak_bytes=peak,
        reserved_peak_bytes=peak,
        baseline_bytes=baseline,
        step_seconds=seconds,
        first_step_peak_bytes=first_baseline + first_rise if workload.training else None,
        device_name="cpu",
    )
