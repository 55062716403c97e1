"""Options shared by the commands that describe a workload, and the progress spinner."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from memlens.workload import parse_shape

Model = Annotated[
    str,
    typer.Argument(
        help="Model name (resnet50, timm/NAME, llama-3-8b), config.json, or file.py:fn."
    ),
]
Batch = Annotated[int, typer.Option("--batch", "-b", help="Batch size.")]
InputShape = Annotated[
    str | None, typer.Option("--input-shape", help="Per-sample input shape, e.g. 3x224x224.")
]
SeqLen = Annotated[int | None, typer.Option("--seq-len", help="Sequence length (language models).")]
Train = Annotated[
    bool, typer.Option("--train/--inference", help="Training step (default) or inference.")
]
Optimizer = Annotated[str, typer.Option("--optimizer", help="sgd, sgd-momentum, adam or adamw.")]
Precision = Annotated[
    str, typer.Option("--precision", help="fp32, bf16, fp16, bf16-amp or fp16-amp.")
]
Gpu = Annotated[
    str | None, typer.Option("--gpu", help="Target device from `memlens devices` (e.g. h100-80gb).")
]
Budget = Annotated[
    str | None, typer.Option("--budget", help="Custom device capacity, e.g. 24GiB or 16GB.")
]
Device = Annotated[
    str, typer.Option("--device", help="Device kind when no --gpu is given: cuda or cpu.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def workload_kwargs(
    *,
    batch: int,
    input_shape: str | None,
    seq_len: int | None,
    train: bool,
    optimizer: str,
    precision: str,
    gpu: str | None,
    budget: str | None,
    device: str,
) -> dict[str, Any]:
    """Keyword arguments for :func:`memlens.estimate` from the shared options."""
    return {
        "batch": batch,
        "input_shape": parse_shape(input_shape) if input_shape else None,
        "seq_len": seq_len,
        "mode": "train" if train else "inference",
        "optimizer": optimizer,
        "precision": precision,
        "device": gpu or device,
        "budget": budget,
    }


@contextmanager
def progress(console: Console, text: str, delay: float = 1.0) -> Iterator[None]:
    """Show a spinner with ``text`` if the block takes longer than ``delay`` seconds."""
    status = console.status(text)
    started = threading.Event()

    def start() -> None:
        started.set()
        status.start()

    timer = threading.Timer(delay, start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if started.is_set():
            status.stop()
