"""memlens: how much memory a PyTorch model needs, where every byte goes, and what to change
so it fits.

Example usage::

    import memlens
    est = memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
    print(est.peak_bytes, est.breakdown, est.fits)
"""

from memlens._errors import (
    ConfigError,
    HeaderError,
    MeasureError,
    MemlensError,
    MissingExtraError,
    TraceError,
    UnknownDeviceError,
    UnknownModelError,
    WorkloadError,
)
from memlens.activations import ActivationReport, activations
from memlens.api import fit, measure, sweep
from memlens.categories import Category, Phase
from memlens.estimate import Estimate, estimate
from memlens.layers import LayerReport, LayerRow, layers
from memlens.measurement.result import Measurement
from memlens.size import SizeReport, size
from memlens.timeline import Timeline
from memlens.workload import Workload

__version__ = "0.1.0"

__all__ = [
    "ActivationReport",
    "Category",
    "ConfigError",
    "Estimate",
    "HeaderError",
    "LayerReport",
    "LayerRow",
    "MeasureError",
    "Measurement",
    "MemlensError",
    "MissingExtraError",
    "Phase",
    "SizeReport",
    "Timeline",
    "TraceError",
    "UnknownDeviceError",
    "UnknownModelError",
    "Workload",
    "WorkloadError",
    "activations",
    "estimate",
    "fit",
    "layers",
    "measure",
    "size",
    "sweep",
]
