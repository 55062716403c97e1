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
Optimizer = Annotated[
    str,
    typer.Option(
        "--optimizer", help="sgd, sgd-momentum, adam, adamw, adafactor, lion or adam-8bit."
    ),
]
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

# Strategies (memlens.strategies) and data loading (host memory).
Checkpoint = Annotated[
    str,
    typer.Option(
        "--checkpoint",
        help="Activation checkpointing: none, blocks, every-k:K, sqrt, auto (fewest blocks "
        "that fit the device) or modules:PATH,PATH.",
    ),
]
Freeze = Annotated[
    str | None,
    typer.Option(
        "--freeze", help="Parameters to freeze: globs on names, comma-separated, or all-but-head."
    ),
]
Lora = Annotated[
    str | None,
    typer.Option("--lora", help="LoRA adapters, e.g. r=16,alpha=32,targets=q_proj,v_proj."),
]
Quantize = Annotated[
    str | None, typer.Option("--quantize", help="Linear weights in int8, int4 or nf4.")
]
OptimizerImpl = Annotated[
    str,
    typer.Option(
        "--optimizer-impl",
        help="auto (foreach on CUDA, for-loop on CPU), foreach, for-loop or fused.",
    ),
]
GradAccum = Annotated[
    int, typer.Option("--grad-accum", help="Micro-batches of --batch per optimizer step.")
]
OffloadOptimizer = Annotated[
    bool,
    typer.Option(
        "--offload-optimizer",
        help="Keep optimizer state, fp32 master weights and gradients in host memory.",
    ),
]
DatasetSize = Annotated[
    int | None, typer.Option("--dataset-size", help="Samples held in host memory.")
]
SampleShape = Annotated[
    str | None,
    typer.Option("--sample-shape", help="Shape of one float32 sample, e.g. 3x224x224."),
]
DatasetBytes = Annotated[
    str | None, typer.Option("--dataset-bytes", help="Size of the in-memory data set, e.g. 20GiB.")
]
NumWorkers = Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes.")]
PrefetchFactor = Annotated[
    int | None, typer.Option("--prefetch-factor", help="Batches each worker prefetches (2).")
]
PinMemory = Annotated[
    bool, typer.Option("--pin-memory", help="DataLoader copies batches into pinned memory.")
]


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


def strategy_kwargs(
    *,
    checkpoint: str = "none",
    freeze: str | None = None,
    lora: str | None = None,
    quantize: str | None = None,
    optimizer_impl: str = "auto",
    grad_accum: int = 1,
    offload_optimizer: bool = False,
    dataset_size: int | None = None,
    sample_shape: str | None = None,
    dataset_bytes: str | None = None,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    pin_memory: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for :func:`memlens.estimate` from the strategy options (validated
    by :class:`memlens.Workload`)."""
    return {
        "checkpoint": checkpoint,
        "freeze": freeze or (),
        "lora": lora,
        "quantize": quantize,
        "optimizer_impl": optimizer_impl,
        "grad_accum": grad_accum,
        "offload_optimizer": offload_optimizer,
        "dataset_size": dataset_size,
        "sample_shape": parse_shape(sample_shape, "sample_shape") if sample_shape else None,
        "dataset_bytes": dataset_bytes,
        "num_workers": num_workers,
        "prefetch_factor": prefetch_factor,
        "pin_memory": pin_memory,
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


Task = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="Hugging Face head: causal-lm, seq-cls, masked-lm, seq2seq, image-cls or base.",
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Let a Hub config run its repository's own code."),
]
