"""``memlens estimate``: the budget table of one step, optionally checked against a real run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from memlens.commands import options as o


def register(app: typer.Typer) -> None:
    @app.command()
    def estimate(
        model: o.Model,
        batch: o.Batch = 1,
        input_shape: o.InputShape = None,
        seq_len: o.SeqLen = None,
        train: o.Train = True,
        optimizer: o.Optimizer = "adam",
        precision: o.Precision = "fp32",
        gpu: o.Gpu = None,
        budget: o.Budget = None,
        device: o.Device = "cuda",
        checkpoint: o.Checkpoint = "none",
        freeze: o.Freeze = None,
        lora: o.Lora = None,
        quantize: o.Quantize = None,
        optimizer_impl: o.OptimizerImpl = "auto",
        grad_accum: o.GradAccum = 1,
        offload_optimizer: o.OffloadOptimizer = False,
        dataset_size: o.DatasetSize = None,
        sample_shape: o.SampleShape = None,
        dataset_bytes: o.DatasetBytes = None,
        num_workers: o.NumWorkers = 0,
        prefetch_factor: o.PrefetchFactor = None,
        pin_memory: o.PinMemory = False,
        task: o.Task = None,
        trust_remote_code: o.TrustRemoteCode = False,
        as_json: o.Json = False,
        compare: Annotated[
            bool, typer.Option("--compare", help="Also run the step for real and show the error.")
        ] = False,
    ) -> None:
        """Peak memory of one step, what it is made of, and whether it fits."""
        from memlens._estimate import estimate as run_estimate
        from memlens.report.budget import render_estimate
        from memlens.report.host import host_table
        from memlens.report.strategies import strategy_lines

        kwargs = o.workload_kwargs(
            batch=batch,
            input_shape=input_shape,
            seq_len=seq_len,
            train=train,
            optimizer=optimizer,
            precision=precision,
            gpu=gpu,
            budget=budget,
            device=device,
        )
        kwargs |= o.strategy_kwargs(
            checkpoint=checkpoint,
            freeze=freeze,
            lora=lora,
            quantize=quantize,
            optimizer_impl=optimizer_impl,
            grad_accum=grad_accum,
            offload_optimizer=offload_optimizer,
            dataset_size=dataset_size,
            sample_shape=sample_shape,
            dataset_bytes=dataset_bytes,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor,
            pin_memory=pin_memory,
        )
        console = Console()
        with o.progress(Console(stderr=True), f"tracing {model}…"):
            est = run_estimate(model, task=task, trust_remote_code=trust_remote_code, **kwargs)
        measured = None
        if compare:
            from memlens.measurement.compare import compare_with_run

            with o.progress(Console(stderr=True), f"running {model} for real…", delay=0.0):
                measured = compare_with_run(model, est)
        if as_json:
            data = est.to_dict()
            if measured is not None:
                data["measured"] = measured.to_dict()
            typer.echo(json.dumps(data, indent=2))
            return
        console.print(render_estimate(est))
        summary = strategy_lines(est)
        if summary is not None:
            console.print()
            console.print(summary)
        if est.host is not None:
            console.print()
            console.print(host_table(est.host))
        if measured is not None:
            from memlens.report.compare import comparison_table

            console.print()
            console.print(comparison_table(est, measured))
