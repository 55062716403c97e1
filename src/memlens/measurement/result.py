"""What a real run measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Measurement:
    """Peak memory of one real step, as the device's allocator saw it."""

    device: str  # "cpu" or "cuda"
    peak_bytes: int  # CPU: allocator running total; CUDA: max_memory_allocated
    reserved_peak_bytes: int  # CUDA: max_memory_reserved; CPU: same as peak_bytes
    baseline_bytes: int  # alive before the step (parameters, buffers, inputs, optimizer state)
    step_seconds: float  # one steady-state step, unprofiled
    first_step_peak_bytes: int | None = None  # training: the first step's peak
    process_bytes: int | None = None  # CUDA: the process's device memory from NVML
    device_name: str = ""
