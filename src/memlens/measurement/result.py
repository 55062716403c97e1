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

    def summary(self) -> str:
        """The long form, as plain text (the repr is already short)."""
        from memlens._repr import rows
        from memlens.units import fmt_bytes

        pairs = [
            ("allocated peak", fmt_bytes(self.peak_bytes)),
            ("reserved peak", fmt_bytes(self.reserved_peak_bytes)),
            ("alive before the step", fmt_bytes(self.baseline_bytes)),
        ]
        if self.first_step_peak_bytes is not None:
            pairs.append(("first step peak", fmt_bytes(self.first_step_peak_bytes)))
        if self.process_bytes is not None:
            pairs.append(("process (NVML)", fmt_bytes(self.process_bytes)))
        head = f"measured on {self.device_name or self.device}: one step {self.step_seconds:.2f} s"
        return "\n".join([head, *rows(pairs)])
