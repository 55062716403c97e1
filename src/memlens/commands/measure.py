"""``memlens measure``: run one step for real and report what the allocator held."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from memlens.commands import options as o
from memlens.units import fmt_bytes


def register(app: typer.Typer) -> None:
    @app.command()
    def measure(
        model: o.Model,
        batch: o.Batch = 1,
        input_shape: o.InputShape = None,
        seq_len: o.SeqLen = None,
        train: o.Train = True,
        optimizer: o.Optimizer = "adam",
        precision: o.Precision = "fp32",
        device: o.Device = "cpu",
        checkpoint: o.Checkpoint = "none",
        freeze: o.Freeze = None,
        lora: o.Lora = None,
        quantize: o.Quantize = None,
        optimizer_impl: o.OptimizerImpl = "auto",
        grad_accum: o.GradAccum = 1,
        offload_optimizer: o.OffloadOptimizer = False,
        task: o.Task = None,
        trust_remote_code: o.TrustRemoteCode = False,
        as_json: o.Json = False,
    ) -> None:
        """Run one steady-state step for real (CPU or CUDA) and print the measured peaks."""
        from memlens._api import measure as run_measure

        kwargs = o.workload_kwargs(
            batch=batch,
            input_shape=input_shape,
            seq_len=seq_len,
            train=train,
            optimizer=optimizer,
            precision=precision,
            gpu=None,
            budget=None,
            device=device,
        )
        kwargs.pop("budget")
        kwargs |= o.strategy_kwargs(
            checkpoint=checkpoint,
            freeze=freeze,
            lora=lora,
            quantize=quantize,
            optimizer_impl=optimizer_impl,
            grad_accum=grad_accum,
            offload_optimizer=offload_optimizer,
        )
        with o.progress(Console(stderr=True), f"running {model}…", delay=0.0):
            m = run_measure(model, task=task, trust_remote_code=trust_remote_code, **kwargs)
        if as_json:
            typer.echo(json.dumps(m.to_dict(), indent=2))
            return
        table = Table(
            title=f"Measured on {m.device_name or m.device}",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("figure")
        table.add_column("bytes", justify="right")
        table.add_column("size", justify="right")
        figures = [("peak allocated", m.peak_bytes), ("alive before the step", m.baseline_bytes)]
        if m.device == "cuda":
            figures.insert(1, ("peak reserved", m.reserved_peak_bytes))
            if m.process_bytes is not None:
                figures.append(("process total (NVML)", m.process_bytes))
        if m.first_step_peak_bytes is not None:
            figures.append(("first step peak", m.first_step_peak_bytes))
        for name, n in figures:
            table.add_row(name, f"{n:,}", fmt_bytes(n))
        table.caption = f"one steady-state step took {m.step_seconds:.2f} s"
        Console().print(table)
