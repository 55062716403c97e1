"""``memlens serve-plan``: KV cache blocks, tokens and concurrent requests of a vLLM server."""

from __future__ import annotations

from typing import Annotated

import typer

from memlens.analytic.weights import SCHEMES
from memlens.commands._export import Html, Markdown, export
from memlens.commands._options import Json, print_json, progress, show

Model = Annotated[str, typer.Argument(help="Bundled LLM name (llama-3-8b) or config.json.")]


def _opt(flag: str, text: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(flag, help=text, metavar=metavar)


def register(app: typer.Typer) -> None:
    @app.command("serve-plan")
    def serve_plan(
        model: Model,
        gpu: Annotated[str, _opt("--gpu", "GPU from `memlens devices`.", "NAME")] = "h100-80gb",
        tp: Annotated[int, _opt("--tp", "Tensor-parallel GPUs.")] = 1,
        quantize: Annotated[
            str,
            _opt(
                "--quantize",
                "Weight scheme: " + ", ".join(SCHEMES) + " (auto: the config's "
                "quantization_config, else its dtype; int4 is GPTQ int4, group 128).",
                "SCHEME",
            ),
        ] = "auto",
        kv_dtype: Annotated[
            str, _opt("--kv-dtype", "KV cache dtype: auto (the model's) or fp8.", "DTYPE")
        ] = "auto",
        max_model_len: Annotated[
            int | None, _opt("--max-model-len", "Longest request (default: the config's).")
        ] = None,
        block_size: Annotated[int, _opt("--block-size", "Tokens per KV cache block.")] = 16,
        gpu_memory_utilization: Annotated[
            float, _opt("--gpu-memory-utilization", "Fraction of the GPU vLLM may use.")
        ] = 0.9,
        max_num_batched_tokens: Annotated[
            int | None,
            _opt(
                "--max-num-batched-tokens",
                "Tokens of the largest forward (default: vllm serve's for the GPU).",
            ),
        ] = None,
        max_num_seqs: Annotated[
            int | None,
            _opt("--max-num-seqs", "Requests per step, the sampler's rows (default: vllm's)."),
        ] = None,
        avg_len: Annotated[
            int | None, _opt("--avg-len", "Average request length: concurrency at it too.")
        ] = None,
        concurrency: Annotated[
            int | None, _opt("--concurrency", "Find the smallest tp serving N requests.", "N")
        ] = None,
        cuda_version: Annotated[
            str | None, _opt("--cuda-version", "CUDA runtime (sets the context).", "X.Y")
        ] = None,
        context: Annotated[
            str | None, _opt("--context", "CUDA context size, e.g. 500MiB.", "BYTES")
        ] = None,
        weights: Annotated[
            str | None,
            _opt(
                "--weights",
                "A safetensors checkpoint (file, index or folder): its header gives the "
                "stored bytes and the scheme.",
                "PATH",
            ),
        ] = None,
        html: Html = None,
        markdown: Markdown = None,
        as_json: Json = False,
    ) -> None:
        """How many KV cache blocks, tokens and concurrent requests a vLLM server gets, with
        every term of vLLM's startup profiling."""
        from memlens.plan.serve import serve_plan as run
        from memlens.report.serve import serve_table

        with progress(f"planning {model} on {gpu}…"):
            plan = run(
                model,
                gpu=gpu,
                tp=tp,
                quantize=quantize,
                kv_dtype=kv_dtype,
                max_model_len=max_model_len,
                block_size=block_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_num_batched_tokens=max_num_batched_tokens,
                max_num_seqs=max_num_seqs,
                avg_len=avg_len,
                concurrency=concurrency,
                cuda_version=cuda_version,
                context=context,
                weights=weights,
            )
        if export(plan, html, markdown, as_json):
            return
        if as_json:
            print_json(plan)
        else:
            show(serve_table(plan))
