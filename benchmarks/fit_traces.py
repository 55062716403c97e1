"""Fit benchmark: how many traces ``memlens.fit`` needs, and its time against one estimate.

    python benchmarks/fit_traces.py [--only MODEL]

For each case, in one process: a warm-up estimate at batch 1 (imports and first-use costs),
then one timed ``memlens.estimate`` at batch 1 (the unit), then one timed ``memlens.fit``
with its strategy table. Records the largest batch, the batches the search traced, the trace
counts of the search and of the options, and the times as multiples of one estimate. For
comparison, doubling then bisecting would need ``2 * bit_length(N)`` traces to find ``N``.
Writes ``benchmarks/results/fit-traces.md`` and ``.json``. Target: at most 4 traces for the
batch search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_TRACES = 4

#: (model, device, workload arguments)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("resnet50", "v100-16gb", {"optimizer": "adam"}),
    ("gpt2", "t4", {"optimizer": "adamw", "seq_len": 1024}),
    ("timm/vit_base_patch16_224", "t4", {"optimizer": "adamw"}),
    ("vit_b_16", "a100-80gb", {"optimizer": "adamw"}),
    ("resnet50", "t4", {"mode": "inference"}),
    ("mobilenet_v3_large", "t4", {"optimizer": "sgd-momentum"}),
    ("bert-base-uncased", "t4", {"optimizer": "adamw", "seq_len": 512}),
    ("llama-2-7b", "a100-80gb", {"optimizer": "adamw", "seq_len": 512}),
]


def run_case(model: str, device: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    import memlens

    memlens.estimate(model, batch=1, device=device, **kwargs)  # warm-up
    t0 = time.perf_counter()
    memlens.estimate(model, batch=1, device=device, **kwargs)
    one = time.perf_counter() - t0
    result = memlens.fit(model, device=device, **kwargs)
    s = result.strategies
    return {
        "model": model,
        "device": device,
        "workload": kwargs,
        "max_batch": result.max_batch,
        "bounded": result.search.bounded,
        "probes": [p.batch for p in result.search.probes],
        "batch_traces": result.search.traces,
        "bisection_traces": 2 * result.max_batch.bit_length() or 1,
        "strategy_traces": s.traces if s is not None else 0,
        "traces": result.traces,
        "estimate_seconds": one,
        "search_seconds": result.search_seconds,
        "fit_seconds": result.seconds,
        "target_batch": s.target_batch if s is not None else None,
        "options": [o.label for o in s.fitting] if s is not None else [],
        "closest": s.closest.label if s is not None and s.closest is not None else None,
    }


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    worst = max(r["batch_traces"] for r in rows)
    lines = [
        "# Fit: traces to find the largest batch, and time against one estimate",
        "",
        f"Reproduce: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; Python {meta['python']}, torch {meta['torch']}. One process;"
        " *one estimate*: a `memlens.estimate` at batch 1 after a warm-up one. *search*: the"
        " batch search's traces (the answer and the batch above it are always among them) and"
        " its time, resolving the model included; *doubling + bisection*: what that search"
        " would need, `2 * bit_length(N)`. *fit*: the whole call, with the strategy table for"
        " the power of two above the answer.",
        "",
        "| model | device | workload | max batch | searched batches | search traces "
        "| doubling + bisection | option traces | all traces | one estimate s "
        "| search, x estimate | fit, x estimate | options that fit |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        w = ", ".join(f"{k}={v}" for k, v in r["workload"].items())
        options = ", ".join(r["options"]) or f"none (closest: {r['closest']})"
        lines.append(
            f"| {r['model']} | {r['device']} | {w} | {r['max_batch']} "
            f"| {', '.join(map(str, r['probes']))} | {r['batch_traces']} "
            f"| {r['bisection_traces']} | {r['strategy_traces']} | {r['traces']} "
            f"| {r['estimate_seconds']:.1f} | {r['search_seconds'] / r['estimate_seconds']:.1f} "
            f"| {r['fit_seconds'] / r['estimate_seconds']:.1f} "
            f"| batch {r['target_batch']}: {options} |"
        )
    lines += [
        "",
        f"Target (at most {TARGET_TRACES} traces for the batch search): "
        f"{'met' if worst <= TARGET_TRACES else 'MISSED'} (worst {worst}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="only this model (repeatable)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()

    import torch

    cases = [c for c in CASES if not args.only or c[0] in args.only]
    rows = []
    for model, device, kwargs in cases:
        rows.append(run_case(model, device, kwargs))
        print(json.dumps(rows[-1]), flush=True)
    meta = {
        "command": "python benchmarks/fit_traces.py" + " ".join(["", *sys.argv[1:]]).rstrip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit-traces.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (out / "fit-traces.md").write_text(render(rows, meta))
    print(render(rows, meta))


if __name__ == "__main__":
    main()
