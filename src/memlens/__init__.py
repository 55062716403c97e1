"""memlens: how much memory a PyTorch model needs, where every byte goes, and what to change
so it fits.

Example usage::

    import memlens
    est = memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
    print(est.peak_bytes, est.breakdown, est.fits)

Names are imported on first use, so ``import memlens`` (and ``memlens --help``) does not import
torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the private module that defines it.
_EXPORTS = {
    "ActivationReport": "memlens._activations",
    "activations": "memlens._activations",
    "Category": "memlens.categories",
    "Phase": "memlens.categories",
    "ConfigError": "memlens._errors",
    "HeaderError": "memlens._errors",
    "MeasureError": "memlens._errors",
    "MemlensError": "memlens._errors",
    "MissingExtraError": "memlens._errors",
    "TraceError": "memlens._errors",
    "UnknownDeviceError": "memlens._errors",
    "UnknownModelError": "memlens._errors",
    "WorkloadError": "memlens._errors",
    "Estimate": "memlens._results",
    "estimate": "memlens._estimate",
    "GenerationEstimate": "memlens._generate",
    "generate_estimate": "memlens._generate",
    "fit": "memlens._api",
    "measure": "memlens._api",
    "sweep": "memlens._api",
    "FitResult": "memlens.plan._fit",
    "SweepResult": "memlens.plan._sweep",
    "LayerReport": "memlens._layers._report",
    "LayerRow": "memlens._layers._report",
    "layers": "memlens._layers._report",
    "Measurement": "memlens.measurement.result",
    "ServePlan": "memlens.plan.serve",
    "serve_plan": "memlens.plan.serve",
    "SizeReport": "memlens._size",
    "size": "memlens._size",
    "Timeline": "memlens.timeline",
    "Workload": "memlens.workload",
}

__all__ = [
    "ActivationReport",
    "Category",
    "ConfigError",
    "Estimate",
    "FitResult",
    "GenerationEstimate",
    "HeaderError",
    "LayerReport",
    "LayerRow",
    "MeasureError",
    "Measurement",
    "MemlensError",
    "MissingExtraError",
    "Phase",
    "ServePlan",
    "SizeReport",
    "SweepResult",
    "Timeline",
    "TraceError",
    "UnknownDeviceError",
    "UnknownModelError",
    "Workload",
    "WorkloadError",
    "activations",
    "estimate",
    "fit",
    "generate_estimate",
    "layers",
    "measure",
    "serve_plan",
    "size",
    "sweep",
]

if TYPE_CHECKING:
    from memlens._activations import ActivationReport, activations
    from memlens._api import fit, measure, sweep
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
    from memlens._estimate import estimate
    from memlens._generate import GenerationEstimate, generate_estimate
    from memlens._layers._report import LayerReport, LayerRow, layers
    from memlens._results import Estimate
    from memlens._size import SizeReport, size
    from memlens.categories import Category, Phase
    from memlens.measurement.result import Measurement
    from memlens.plan._fit import FitResult
    from memlens.plan._sweep import SweepResult
    from memlens.plan.serve import ServePlan, serve_plan
    from memlens.timeline import Timeline
    from memlens.workload import Workload


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'memlens' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
