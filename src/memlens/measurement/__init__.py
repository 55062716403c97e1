"""Run a workload for real and measure what the allocator held (the ground truth)."""

from memlens.measurement.measure import measure_spec
from memlens.measurement.result import Measurement

__all__ = ["Measurement", "measure_spec"]
