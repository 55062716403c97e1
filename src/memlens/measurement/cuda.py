"""CUDA ground truth: ``torch.cuda`` memory statistics and the process total from NVML."""

from __future__ import annotations

import time

import torch

from memlens.measurement.real import RealStep, live_bytes
from memlens.measurement.result import Measurement
from memlens.workload import Workload


def _process_bytes(device: torch.device) -> int | None:
    """Device memory this process holds (CUDA context included), from NVML if available."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            import os

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid():
                    return int(proc.usedGpuMemory)
        except Exception:  # NVML can be absent in containers
            pass
    try:  # whole-device used memory: an upper bound when this process is alone
        return int(torch.cuda.device_memory_used(device))
    except Exception:
        return None


def measure_cuda(step: RealStep, workload: Workload) -> Measurement:
    """Warm up, then reset the peak statistics and measure one step."""
    dev = step.device

    def go() -> None:
        step.run(workload)

    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    go()  # warm-up: optimizer state, cuBLAS/cuDNN handles and workspaces
    torch.cuda.synchronize(dev)
    first = torch.cuda.max_memory_allocated(dev)
    t0 = time.perf_counter()
    go()
    torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    baseline = live_bytes(step)
    torch.cuda.reset_peak_memory_stats(dev)
    go()
    torch.cuda.synchronize(dev)
    return Measurement(
        device="cuda",
        peak_bytes=torch.cuda.max_memory_allocated(dev),
        reserved_peak_bytes=torch.cuda.max_memory_reserved(dev),
        baseline_bytes=baseline,
        step_seconds=seconds,
        first_step_peak_bytes=first if workload.training else None,
        process_bytes=_process_bytes(dev),
        device_name=torch.cuda.get_device_name(dev),
    )
