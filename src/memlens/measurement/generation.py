"""A real CPU ``model.generate()``, measured at its prefill and at its last decode step.

The CPU allocator's running total is read from the profiler's allocation records, as
:mod:`memlens.measurement.cpu` does for a step. A forward pre-hook on the input embeddings
(which runs once per forward pass and per prefill chunk) allocates and frees a marker of
:data:`~memlens.measurement.cpu._MARK_BYTES` bytes, splitting the records into forward
passes: the prefill is everything before the first decode forward (the prompt's forward or
chunks, the first token's choice), the last step everything from the last forward to the
end of ``generate()``. A step's peak is the bytes alive before ``generate()`` (weights,
buffers, the prompt) plus the largest rise of the running total within it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from memlens.engine.build import skip_init
from memlens.engine.generate import generation_config, prompt_len
from memlens.engine.protocol import StepStrategies
from memlens.measurement.cpu import _MARK_BYTES, _allocations, _native_stderr_silenced
from memlens.sources.base import Inputs, ModelSpec, building
from memlens.workload import Workload


@dataclass
class GenerationMeasurement:
    """Peaks of a real CPU generation: at the prefill and at the last decode step."""

    prefill_peak_bytes: int
    last_step_peak_bytes: int
    baseline_bytes: int  # weights, buffers and the prompt, alive before generate()
    forwards: int  # forward passes run (prefill chunks count one each)
    seconds: float


def _live(model: nn.Module, prompt: torch.Tensor) -> int:
    storages = {}
    for t in (*model.parameters(), *model.buffers(), prompt):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def measure_generation_cpu(
    spec: ModelSpec, workload: Workload, strategies: StepStrategies
) -> GenerationMeasurement:
    """Build ``spec``'s model on the CPU (values uninitialised: they never change memory),
    apply the workload's strategies, and measure ``generate()`` of ``workload.new_tokens``
    tokens after a prompt of ``prompt_len`` random tokens."""
    with skip_init(), building(workload):
        model = spec.build()
    P, N = prompt_len(spec, workload), workload.new_tokens
    vocab = model.config.get_text_config().vocab_size
    prompt = torch.randint(0, vocab, (workload.batch, P))
    strategies.prepare(model, Inputs(kwargs={"input_ids": prompt}))
    config = generation_config(model, workload, N, True, real=True)

    def marker(module: nn.Module, args: tuple) -> None:
        mark = torch.empty(_MARK_BYTES, dtype=torch.uint8)
        del mark

    baseline = _live(model, prompt)
    handle = model.get_input_embeddings().register_forward_pre_hook(marker)
    t0 = time.perf_counter()
    try:
        with (
            torch.no_grad(),
            _native_stderr_silenced(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            out = model.generate(prompt, generation_config=config)
            del out
    finally:
        handle.remove()
    seconds = time.perf_counter() - t0
    records = _allocations(prof)
    marks = [
        i
        for i in range(len(records) - 1)
        if records[i][1] == _MARK_BYTES and records[i + 1][1] == -_MARK_BYTES
    ]
    decode_forwards = N - 1
    marks_set = set(marks)
    if not records or len(marks) <= decode_forwards:
        raise RuntimeError("the profiler lost the markers between the forward passes")
    start = records[0][2] - records[0][1]  # running total before the first record
    first_decode = marks[len(marks) - decode_forwards] if decode_forwards else len(records)
    prefill = [
        r
        for i, r in enumerate(records[:first_decode])
        if i not in marks_set and i - 1 not in marks_set
    ]
    last = [r for i, r in enumerate(records) if i >= marks[-1] + 2] if N > 1 else prefill
    return GenerationMeasurement(
        prefill_peak_bytes=baseline + max(0, max(r[2] for r in prefill) - start),
        last_step_peak_bytes=baseline + max(0, max(r[2] for r in last) - start),
        baseline_bytes=baseline,
        forwards=len(marks),
        seconds=seconds,
    )
