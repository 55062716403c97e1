"""Strategy combinations that make a step fit at a given batch size, cheapest first.

A *knob* is one way to save memory (precision, checkpointing, optimizer, gradient
accumulation, optimizer offload, adapters; in inference: precision, weight quantisation, batch
split); its *choices* are ordered, the first being the workload as given and each next one
saving more and costing more. A combination takes one choice per knob. Combinations are ranked
by what they cost before any is traced:

1. the worse of accuracy risk and compute overhead (none < low < some < high),
2. then their sum, then the risk alone (a slower step is better than a less accurate model),
   then the compute overhead, then the number of micro-steps.

The search traces the workload as given and each choice alone first (along a knob, only up
to the first choice that fits alone). A choice that saves no memory on its own is dropped (it
would cost something for nothing; checkpointing a model whose blocks hold little, for one).
Among the choices that save, memory is assumed to fall as a combination gets more
aggressive, so when no choice fits alone the most aggressive combination is traced next (if
it does not fit, nothing does). Then the ranking is walked, tracing a combination only if
nothing cheaper that it contains already fits (it would be dominated) and nothing more
aggressive that contains it already failed (it cannot fit).

A choice is offered only if the workload accepts its field values (:meth:`Tracer.accepts`,
validated by :class:`~memlens.workload.Workload`'s schema); the others are listed as
unavailable.

Compute overhead is counted in forward passes of the model: a training step is one forward
and a backward of about two (2N and 4N FLOPs per token for N parameters: Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", section 2.1), an inference step one forward.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from memlens._errors import MemlensError, WorkloadError
from memlens.plan.tracer import Tracer

#: Forward-pass equivalents of one training step: forward 1, backward 2 (Kaplan et al. 2020).
TRAIN_STEP_FORWARDS = 3
#: Models from this many parameters are offered LoRA and QLoRA.
LLM_PARAMS = 10**9
#: LoRA rank of the adapter choices (PEFT's ``LoraConfig`` default).
LORA_RANK = 8
#: Pre-Ampere NVIDIA devices (sm70, sm75): no bf16 tensor cores, mixed precision is fp16.
NO_BF16 = frozenset({"v100-16gb", "v100-32gb", "t4"})
#: Batch splits tried: gradient accumulation (training) or sequential passes (inference).
SPLITS = (2, 4, 8)


class Cost(IntEnum):
    """A coarse scale shared by accuracy risk and compute overhead."""

    NONE = 0
    LOW = 1
    SOME = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Choice:
    """One step along a knob: the :func:`memlens.estimate` options it sets and its costs."""

    label: str
    options: tuple[tuple[str, Any], ...] = ()
    risk: Cost = Cost.NONE
    overhead: Cost = Cost.NONE
    extra_forwards: float = 0.0  # forward passes added per step (negative: saved)
    micro_steps: int = 1  # the batch is run in this many slices
    offload: bool = False  # optimizer state and step on the host: traffic over PCIe


AS_GIVEN = Choice("as given")
CHECKPOINT_OPTIONS: tuple[tuple[str, Any], ...] = (("checkpoint", "blocks"),)


@dataclass(frozen=True)
class Option:
    """A traced combination of choices at the target batch size."""

    choices: tuple[Choice, ...]  # the non-trivial ones
    target_batch: int
    total_bytes: int
    peak_bytes: int
    capacity_bytes: int
    training: bool
    pcie_bytes: int = 0  # per step, with optimizer offload
    recompute_share: float = 0.0  # traced FLOPs that checkpointing re-runs, over the step's

    @property
    def label(self) -> str:
        return " + ".join(c.label for c in self.choices) or "as given"

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    @property
    def micro_steps(self) -> int:
        return max((c.micro_steps for c in self.choices), default=1)

    @property
    def micro_batch(self) -> int:
        return self.target_batch // self.micro_steps

    @property
    def risk(self) -> Cost:
        return max((c.risk for c in self.choices), default=Cost.NONE)

    @property
    def overhead(self) -> Cost:
        return max((c.overhead for c in self.choices), default=Cost.NONE)

    @property
    def compute_overhead(self) -> float:
        """Extra compute per step as a fraction of the step as given (-0.33: a third less).

        Recomputation is the traced one (FLOPs the checkpointed blocks re-run); the other
        choices use the forward = 1/3 of a training step rule (Kaplan et al. 2020)."""
        step = TRAIN_STEP_FORWARDS if self.training else 1
        ruled = sum(c.extra_forwards for c in self.choices if c.options != CHECKPOINT_OPTIONS)
        return self.recompute_share + ruled / step


@dataclass
class StrategySearch:
    """Combinations that fit (cheapest first), the closest miss if none does, and the cost."""

    target_batch: int
    baseline: Option | None = None  # the workload as given at the target batch
    fitting: list[Option] = field(default_factory=list)
    closest: Option | None = None  # the smallest traced combination, when none fits
    unavailable: list[str] = field(default_factory=list)  # options estimate does not accept
    no_saving: list[Option] = field(default_factory=list)  # choices that save nothing alone
    failed: list[str] = field(default_factory=list)  # "label: reason" of traces that failed
    traces: int = 0
    exhausted: bool = True  # False: the trace budget ended the search early


def knobs(tracer: Tracer, target: int, num_params: int) -> list[list[Choice]]:
    """The knobs that apply to the tracer's workload, each starting with :data:`AS_GIVEN`
    (a knob the caller already turned is left as given)."""
    w = tracer.workload
    training = w.training
    device = tracer.device.name if tracer.device is not None else ""
    half = "fp16" if device in NO_BF16 else "bf16"
    out: list[list[Choice]] = []
    if w.precision == "fp32":
        if training:
            out.append([Choice(f"{half}-amp", (("precision", f"{half}-amp"),), risk=Cost.LOW)])
        else:
            risk = Cost.LOW if half == "bf16" else Cost.SOME
            out.append([Choice(half, (("precision", half),), risk=risk)])
    if training and w.checkpoint == "none":
        checkpointing = Choice(
            "checkpointing", CHECKPOINT_OPTIONS, overhead=Cost.SOME, extra_forwards=1
        )
        out.append([checkpointing])
    if training and w.optimizer in ("adam", "adamw"):
        eight_bit = Choice("adam-8bit", (("optimizer", "adam-8bit"),), risk=Cost.LOW)
        sgd = Choice("sgd-momentum", (("optimizer", "sgd-momentum"),), risk=Cost.SOME)
        out.append([eight_bit if tracer.accepts(**dict(eight_bit.options)) else sgd])
    splits = [k for k in SPLITS if target % k == 0]
    if splits and w.grad_accum == 1:
        out.append(
            [
                Choice(
                    f"grad-accum {k}" if training else f"{k} passes",
                    (("grad_accum", k),) if training else (),
                    overhead=Cost.LOW,
                    micro_steps=k,
                )
                for k in splits
            ]
        )
    if training and not w.offload_optimizer:
        out.append(
            [
                Choice(
                    "offload optimizer",
                    (("offload_optimizer", True),),
                    overhead=Cost.HIGH,
                    offload=True,
                )
            ]
        )
    adapted = bool(w.lora or w.quantize or w.freeze)
    if training and num_params >= LLM_PARAMS and not adapted:
        lora = Choice("LoRA", (("lora", f"r={LORA_RANK}"),), risk=Cost.SOME, extra_forwards=-1)
        qlora = Choice(
            "QLoRA",
            (("lora", f"r={LORA_RANK}"), ("quantize", "nf4")),
            risk=Cost.SOME,
            overhead=Cost.LOW,
            extra_forwards=-1,
        )
        out.append([lora, qlora])
    if not training and not w.quantize:
        out.append(
            [
                Choice(f"{bits} weights", (("quantize", bits),), risk=Cost.SOME, overhead=Cost.LOW)
                for bits in ("int8", "int4")
            ]
        )
    return [[AS_GIVEN, *choices] for choices in out]


def search_strategies(
    tracer: Tracer,
    target: int,
    *,
    max_batch: int,
    num_params: int,
    top: int = 6,
    max_traces: int = 16,
) -> StrategySearch:
    """Combinations that fit at ``target``, cheapest first (at most ``top``; at most
    ``max_traces`` traces of combinations once each choice has been traced alone).

    ``max_batch`` is the batch search's answer for the workload as given: a plain batch
    split cannot fit when its micro-batch is above it (accumulated gradients only add).
    """
    training = tracer.workload.training
    search = StrategySearch(target)
    start = tracer.count
    traced: dict[tuple[Choice, ...], Option | None] = {}

    def known_miss(choices: tuple[Choice, ...]) -> bool:
        """A plain batch split whose micro-batch the batch search found too large."""
        micro = target // max((c.micro_steps for c in choices), default=1)
        return bool(choices) and micro > max_batch and all(c.micro_steps > 1 for c in choices)

    def run(choices: tuple[Choice, ...]) -> Option | None:
        """The traced option (None: a known miss, or the trace failed)."""
        if choices not in traced:
            traced[choices] = (
                None if known_miss(choices) else _trace(tracer, choices, target, training, search)
            )
        return traced[choices]

    axes = []
    for axis in knobs(tracer, target, num_params):
        offered = [c for c in axis[1:] if tracer.accepts(**dict(c.options))]
        search.unavailable += [c.label for c in axis[1:] if c not in offered]
        axes.append([AS_GIVEN, *offered])
    base = search.baseline = run(())
    if base is not None and base.fits:
        search.fitting.append(base)
    else:
        axes = _saving_axes(axes, base, run, known_miss, search)
        combos = sorted(
            itertools.product(*(range(len(a)) for a in axes)), key=lambda c: _rank(axes, c)
        )
        fits: list[tuple[int, ...]] = []
        misses: list[tuple[int, ...]] = []
        singles = tracer.count
        if not any(o is not None and o.fits for o in traced.values()):
            most = run(tuple(a[-1] for a in axes))  # if the most aggressive misses, all do
            if most is not None and not most.fits:
                misses.append(tuple(len(a) - 1 for a in axes))
        for combo in combos:
            if len(search.fitting) >= top:
                break
            if any(_covers(combo, f) and combo != f for f in fits) or any(
                _covers(m, combo) for m in misses
            ):
                continue
            choices = tuple(a[i] for a, i in zip(axes, combo, strict=True) if i)
            if choices not in traced and tracer.count - singles >= max_traces:
                search.exhausted = False
                break
            option = run(choices)
            if option is None:
                if known_miss(choices):
                    misses.append(combo)
            else:
                (fits if option.fits else misses).append(combo)
                if option.fits:
                    search.fitting.append(option)
    options = [o for o in traced.values() if o is not None]
    if not search.fitting and options:
        search.closest = min(options, key=lambda o: o.total_bytes)
    search.traces = tracer.count - start
    return search


def _saving_axes(
    axes: list[list[Choice]],
    base: Option | None,
    run: Callable[[tuple[Choice, ...]], Option | None],
    known_miss: Callable[[tuple[Choice, ...]], bool],
    search: StrategySearch,
) -> list[list[Choice]]:
    """The axes without the choices that, traced alone, save no memory or fail to trace
    (plain batch splits known to miss are kept: they save by construction), and without
    those beyond one that fits alone (they cost more for nothing)."""
    kept_axes = []
    for axis in axes:
        kept = [AS_GIVEN]
        for choice in axis[1:]:
            option = run((choice,))
            if option is None and not known_miss((choice,)):
                continue  # the trace failed: reported in search.failed
            if option is not None and base is not None and option.total_bytes >= base.total_bytes:
                search.no_saving.append(option)
                continue
            kept.append(choice)
            if option is not None and option.fits:
                break
        if len(kept) > 1:
            kept_axes.append(kept)
    return kept_axes


def _rank(axes: list[list[Choice]], combo: tuple[int, ...]) -> tuple[Any, ...]:
    choices = [a[i] for a, i in zip(axes, combo, strict=True)]
    risk = max(c.risk for c in choices)
    overhead = max(c.overhead for c in choices)
    return (
        max(risk, overhead),
        risk + overhead,
        risk,
        sum(c.extra_forwards for c in choices),
        max(c.micro_steps for c in choices),
        sum(combo),
    )


def _covers(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether combination ``a`` is at least as aggressive as ``b`` on every knob."""
    return all(x >= y for x, y in zip(a, b, strict=True))


def _trace(
    tracer: Tracer,
    choices: tuple[Choice, ...],
    target: int,
    training: bool,
    search: StrategySearch,
) -> Option | None:
    micro = target // max((c.micro_steps for c in choices), default=1)
    label = " + ".join(c.label for c in choices) or "as given"
    try:
        est = tracer(micro, **{k: v for c in choices for k, v in c.options})
    except WorkloadError as e:  # a combination the workload refuses
        search.unavailable.append(f"{label} ({e})")
        return None
    except Exception as e:  # one option's failure (the engine's, or the model's) ends only it
        lines = str(e).strip().splitlines() or [""]
        kind = "" if isinstance(e, MemlensError) else f"{type(e).__name__}: "
        search.failed.append(f"{label}: {kind}{lines[0]}")
        return None
    return Option(
        choices=choices,
        target_batch=target,
        total_bytes=est.total_bytes,
        peak_bytes=est.peak_bytes,
        capacity_bytes=est.capacity_bytes or 0,
        training=training,
        # fp32 gradients to the host and updated parameters back, every step
        pcie_bytes=2 * 4 * est.trainable_params if any(c.offload for c in choices) else 0,
        recompute_share=est.recompute_share,
    )
