"""Activation memory of inference: the sum of layer outputs, and the peak that really occurs.

Summing every layer's output overstates what inference holds (most outputs die as soon as
the next layer has read them), while the largest single layer understates it: skip
connections (ResNet's identity branch, U-Net's encoder features) keep earlier outputs alive
until they are used again. The peak comes from the engine's timeline of one inference
forward pass (:func:`memlens.engine.trace.trace`), in which a tensor is freed when its last
reference goes, that is after its last use, exactly as eager PyTorch frees it. The timeline
also holds the buffers CPU kernels allocate inside an op (oneDNN convolution reorders,
``:workspace`` blocks), which are part of the real peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memlens._layers._report import layers
from memlens._repr import brief, rows
from memlens.categories import Category, Phase
from memlens.timeline import Timeline
from memlens.workload import Workload

#: Categories that exist before the step and are not activations.
BASELINE = (Category.PARAMETERS, Category.BUFFERS, Category.INPUTS)


@dataclass
class LiveTensor:
    """One storage alive at the peak."""

    module: str  # where it was allocated
    op: str
    nbytes: int
    workspace: bool  # a kernel-internal buffer rather than an op output


@dataclass
class ActivationReport:
    """Inference activations of one model: summed, largest layer, and the traced peak.

    ``peak_bytes`` counts everything alive at the peak (parameters, buffers and inputs
    included), as a measurement of the real run does; ``peak_activation_bytes`` leaves those
    out: activations and kernel workspaces only.
    """

    model: str
    workload: Workload
    total_output_bytes: int  # every layer's outputs, summed
    max_layer: str  # the layer whose input + output is largest
    max_layer_io_bytes: int
    peak_bytes: int
    baseline_bytes: int  # parameters, buffers and inputs alive at the peak
    peak_workspace_bytes: int  # kernel-internal buffers alive at the peak
    peak_module: str  # the module running at the peak
    peak_op: str
    peak_tensor_bytes: int  # the largest sum of live activation tensors, workspaces left out
    peak_tensor_module: str  # the module running then
    live: list[LiveTensor]  # activations and workspaces alive at the peak, oldest first
    # live bytes after each event of the forward pass: activations and workspaces, and
    # activation tensors alone
    curve: list[int] = field(repr=False, default_factory=list)
    tensor_curve: list[int] = field(repr=False, default_factory=list)
    peak_event: int = 0  # index of the peak in the curves
    device: str = ""  # the target traced for: its kernels' internal buffers differ

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            batch=self.workload.batch,
            peak_bytes=self.peak_bytes,
            baseline_bytes=self.baseline_bytes,
            peak_module=self.peak_module,
            live=len(self.live),
        )

    def summary(self) -> str:
        """The long form, as plain text: the peak, what is alive at it, the largest layer."""
        from memlens.units import fmt_bytes

        pairs = [
            (
                "peak",
                f"{fmt_bytes(self.peak_bytes)} at {self.peak_module or '<root>'} ({self.peak_op})",
            ),
            ("of which weights and inputs", fmt_bytes(self.baseline_bytes)),
            ("kernel workspaces at the peak", fmt_bytes(self.peak_workspace_bytes)),
            ("every layer's outputs, summed", fmt_bytes(self.total_output_bytes)),
            (
                "largest layer input + output",
                f"{fmt_bytes(self.max_layer_io_bytes)} ({self.max_layer or '<root>'})",
            ),
        ]
        live = [(f"{t.module or '<root>'} {t.op}", fmt_bytes(t.nbytes)) for t in self.live]
        lines = [f"{self.model}: inference activations at batch {self.workload.batch}"]
        return "\n".join([*lines, *rows(pairs), "alive at the peak:", *rows(live, 4)])

    @property
    def peak_activation_bytes(self) -> int:
        return self.peak_bytes - self.baseline_bytes

    @property
    def skip_factor(self) -> float:
        """Peak of live activation tensors over the largest single layer's input + output:
        above 1 when earlier outputs are kept alive (skip connections)."""
        if not self.max_layer_io_bytes:
            return 0.0
        return self.peak_tensor_bytes / self.max_layer_io_bytes


def activations(
    model: Any,
    workload: Workload | None = None,
    *,
    device: str = "cpu",
    inputs: Any = None,
    **fields: Any,
) -> ActivationReport:
    """Activation memory of one inference forward pass of ``model`` (arguments as
    :func:`memlens.estimate`; ``device`` is ``"cpu"`` or ``"cuda"``, whose kernels differ in
    internal buffers).

    Example usage::

        acts = memlens.activations("resnet50", batch=8)
        print(acts.peak_activation_bytes, acts.peak_module, acts.total_output_bytes)

    Known limitations: inference only (training activations are the ``saved`` column of
    :func:`memlens.layers` and the ``activations`` category of :func:`memlens.estimate`).
    """
    from memlens._pipeline import trace_spec
    from memlens._setup import model_spec, prepare

    work, target = prepare(workload, fields, "activations", device=device)
    work = work.with_(mode="inference")
    spec = model_spec(model, work, inputs)
    table = layers(spec, work)
    largest = max(table.rows, key=lambda r: r.io_bytes, default=None)
    report = from_timeline(trace_spec(spec, work, target).timeline, spec.name, work)
    report.device = target.name
    report.total_output_bytes = table.totals.output_bytes
    if largest is not None:
        report.max_layer = largest.path or "<root>"
        report.max_layer_io_bytes = largest.io_bytes
    return report


def from_timeline(timeline: Timeline, model: str, workload: Workload) -> ActivationReport:
    """The peak of an inference timeline, split into baseline, activations and workspaces.

    The curves start with the forward pass (the setup events before it hold only the
    baseline)."""
    total = timeline.curve()
    start = timeline.phase_starts.get(Phase.FORWARD, 0)
    curve, tensors = [], []
    live = live_tensors = 0
    for block_id, sign in timeline.events:
        block = timeline.blocks[block_id]
        if block.category not in BASELINE:
            live += sign * block.nbytes
            if not block.op.endswith(":workspace"):
                live_tensors += sign * block.nbytes
        curve.append(live)
        tensors.append(live_tensors)
    index = max(range(len(total)), key=total.__getitem__) if total else -1
    t_index = max(range(len(tensors)), key=tensors.__getitem__) if tensors else -1
    alive = timeline.live_at(index) if index >= 0 else []
    at_peak = [b for b in alive if b.category not in BASELINE]
    block = timeline.blocks[timeline.events[index][0]] if index >= 0 else None  # an allocation
    t_block = timeline.blocks[timeline.events[t_index][0]] if t_index >= 0 else None
    return ActivationReport(
        model=model,
        workload=workload,
        total_output_bytes=0,
        max_layer="",
        max_layer_io_bytes=0,
        peak_bytes=total[index] if index >= 0 else 0,
        baseline_bytes=sum(b.nbytes for b in alive if b.category in BASELINE),
        peak_workspace_bytes=sum(b.nbytes for b in at_peak if b.op.endswith(":workspace")),
        peak_module=block.module if block is not None else "",
        peak_op=block.op if block is not None else "",
        peak_tensor_bytes=tensors[t_index] if t_index >= 0 else 0,
        peak_tensor_module=t_block.module if t_block is not None else "",
        live=[LiveTensor(b.module, b.op, b.nbytes, b.op.endswith(":workspace")) for b in at_peak],
        curve=curve[start:],
        tensor_curve=tensors[start:],
        peak_event=max(index - start, 0),
    )
