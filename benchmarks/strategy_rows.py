"""What-if rows of the accuracy benchmark: each strategy of ``memlens.estimate`` on models that
run for real on a CPU in seconds. ``benchmarks/accuracy.py`` imports :data:`ROWS`.

Each row is ``{"label", "model", "kind", "kwargs"}``: ``model`` and ``kwargs`` go to
``memlens.estimate(model, device=..., **kwargs)`` and to ``memlens.measure`` alike.
Quantised rows run bitsandbytes' storage layout with memlens's stand-in for its CUDA
dequantisation kernel (see :mod:`memlens.strategies.quantize`): on a CPU they check that
engine and real run agree, not bitsandbytes itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MLP = f"{HERE / 'zoo.py'}:mlp"
TINY_LLAMA = str(HERE / "configs" / "tiny-llama.json")  # 4 layers, hidden 256, vocab 4096

_RESNET = {"batch": 16, "input_shape": (3, 128, 128)}
_GPT2 = {"batch": 2, "seq_len": 128}
_LLAMA = {"batch": 4, "seq_len": 256}


def _row(label: str, model: str, kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"label": label, "model": model, "kind": kind, "kwargs": kwargs}


ROWS: list[dict[str, Any]] = [
    # precision
    _row("mlp/bf16", MLP, "pure bf16", batch=64, input_shape=(3, 64, 64), precision="bf16"),
    _row(
        "mlp/bf16-amp",
        MLP,
        "bf16 autocast",
        batch=64,
        input_shape=(3, 64, 64),
        precision="bf16-amp",
    ),
    _row("resnet18/bf16-amp", "resnet18", "bf16 autocast", precision="bf16-amp", **_RESNET),
    _row("gpt2/bf16-amp", "gpt2", "bf16 autocast", precision="bf16-amp", **_GPT2),
    _row("tiny-llama/bf16", TINY_LLAMA, "pure bf16", precision="bf16", **_LLAMA),
    # activation checkpointing (SGD: the backward peak is the one checkpointing lowers)
    _row(
        "resnet18/ckpt-blocks",
        "resnet18",
        "checkpointing",
        optimizer="sgd",
        checkpoint="blocks",
        **_RESNET,
    ),
    _row(
        "resnet18/ckpt-sqrt",
        "resnet18",
        "checkpointing",
        optimizer="sgd",
        checkpoint="sqrt",
        **_RESNET,
    ),
    _row(
        "gpt2/ckpt-blocks", "gpt2", "checkpointing", optimizer="sgd", checkpoint="blocks", **_GPT2
    ),
    _row(
        "tiny-llama/ckpt-every-2",
        TINY_LLAMA,
        "checkpointing",
        optimizer="sgd",
        checkpoint="every-k:2",
        **_LLAMA,
    ),
    _row(
        "tiny-llama/ckpt-sqrt",
        TINY_LLAMA,
        "checkpointing",
        optimizer="sgd",
        checkpoint="sqrt",
        **_LLAMA,
    ),
    # freezing and adapters
    _row(
        "resnet18/freeze-layer1-2",
        "resnet18",
        "freezing",
        freeze="conv1,bn1,layer1,layer2",
        **_RESNET,
    ),
    _row("gpt2/freeze-all-but-head", "gpt2", "freezing", freeze="all-but-head", **_GPT2),
    _row("gpt2/lora", "gpt2", "LoRA", lora="r=16,alpha=32", **_GPT2),
    _row("bert/lora", "bert-base-uncased", "LoRA", lora="r=8", batch=4, seq_len=128),
    _row("tiny-llama/lora-bf16", TINY_LLAMA, "LoRA", lora="r=16", precision="bf16", **_LLAMA),
    # quantised base (stand-in kernel, see the module docstring)
    _row(
        "tiny-llama/qlora-nf4",
        TINY_LLAMA,
        "QLoRA (emulated kernel)",
        quantize="nf4",
        lora="r=16",
        precision="bf16",
        **_LLAMA,
    ),
    _row(
        "tiny-llama/int8-lora",
        TINY_LLAMA,
        "int8 + LoRA (emulated kernel)",
        quantize="int8",
        lora="r=16",
        **_LLAMA,
    ),
    # optimizers and their implementations
    _row("resnet18/lion", "resnet18", "optimizer", optimizer="lion", **_RESNET),
    _row("resnet18/adafactor", "resnet18", "optimizer", optimizer="adafactor", **_RESNET),
    _row("resnet18/adam-8bit", "resnet18", "optimizer", optimizer="adam-8bit", **_RESNET),
    _row(
        "resnet18/adamw-foreach",
        "resnet18",
        "optimizer",
        optimizer="adamw",
        optimizer_impl="foreach",
        **_RESNET,
    ),
    _row(
        "resnet18/adam-fused",
        "resnet18",
        "optimizer",
        optimizer="adam",
        optimizer_impl="fused",
        **_RESNET,
    ),
    _row(
        "gpt2/adamw-foreach",
        "gpt2",
        "optimizer",
        optimizer="adamw",
        optimizer_impl="foreach",
        **_GPT2,
    ),
    # gradient accumulation
    _row(
        "resnet18/grad-accum-4",
        "resnet18",
        "grad accumulation",
        grad_accum=4,
        batch=4,
        input_shape=(3, 128, 128),
    ),
    _row("gpt2/grad-accum-2", "gpt2", "grad accumulation", grad_accum=2, **_GPT2),
]
