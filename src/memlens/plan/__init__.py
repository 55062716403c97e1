"""Planning: the largest batch size that fits, strategies that make a step fit, and memory
against batch size, each from few traces (memory is nearly affine in the batch size)."""

from memlens.plan._fit import FitResult, plan_fit
from memlens.plan._sweep import SweepResult, plan_sweep
from memlens.plan.batch import BatchSearch, Probe
from memlens.plan.strategies import Choice, Cost, Option, StrategySearch

__all__ = [
    "BatchSearch",
    "Choice",
    "Cost",
    "FitResult",
    "Option",
    "Probe",
    "StrategySearch",
    "SweepResult",
    "plan_fit",
    "plan_sweep",
]
