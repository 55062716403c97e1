"""Closed form against trace: the analytic model (``memlens.analytic``) and the traced step
(one GPU, or one rank of a parallel layout traced on PyTorch's own DDP/FSDP2/tensor-parallel
code over a fake process group) on layouts of a small Llama-style model.

    python benchmarks/analytic_vs_traced.py

Each row: the worst rank's allocated peak (cuBLAS workspaces included, the CUDA context and
NCCL's buffers outside the allocator excluded, as both count them the same way), traced and
in closed form, and the error of the closed form. Writes
``benchmarks/results/analytic-vs-traced.md`` and ``.json``. Target: within 5% on every row.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODEL = str(HERE / "configs" / "tiny-llama.json")
DEVICE = "h100-80gb"
TARGET = 0.05
# use_cache=False: the closed form leaves out the key/value cache a forward returns (it says
# so in its unknowns); with the cache off, both hold the same tensors
BASE: dict[str, Any] = {"batch": 2, "seq_len": 256, "attention": "eager", "use_cache": False}

#: (label, workload fields on top of BASE)
LAYOUTS: list[tuple[str, dict[str, Any]]] = [
    ("1 GPU, fp32", {"precision": "fp32"}),
    ("1 GPU, bf16, checkpoint blocks", {"precision": "bf16", "checkpoint": "blocks"}),
    ("1 GPU, bf16-amp, grad-accum 2", {"precision": "bf16-amp", "grad_accum": 2}),
    ("1 GPU, bf16, SDPA", {"precision": "bf16", "attention": "sdpa"}),
    ("DDP dp 2, bf16", {"precision": "bf16", "dp": 2}),
    ("FSDP full dp 2, bf16", {"precision": "bf16", "fsdp": "full", "dp": 2}),
    ("FSDP grad-op dp 2, bf16", {"precision": "bf16", "fsdp": "grad-op", "dp": 2}),
    ("FSDP full dp 2, bf16-amp", {"precision": "bf16-amp", "fsdp": "full", "dp": 2}),
    (
        "FSDP full dp 4, fp32, checkpoint blocks",
        {"precision": "fp32", "fsdp": "full", "dp": 4, "checkpoint": "blocks"},
    ),
    ("FSDP full dp 2 x TP 2, bf16", {"precision": "bf16", "fsdp": "full", "dp": 2, "tp": 2}),
]


def run(label: str, fields: dict[str, Any]) -> dict[str, Any]:
    import memlens
    from memlens.analytic.estimate import analytic_estimate

    kw = {**BASE, **fields}
    t0 = time.perf_counter()
    try:
        traced = memlens.estimate(MODEL, device=DEVICE, analytic=False, **kw)
    except memlens.MemlensError as exc:
        return {"layout": label, "workload": kw, "error": str(exc)}
    traced_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    closed = analytic_estimate(MODEL, device=DEVICE, **kw)
    closed_s = time.perf_counter() - t0
    worst = closed.worst
    return {
        "layout": label,
        "workload": kw,
        "traced_peak_bytes": traced.peak_bytes,
        "closed_peak_bytes": worst.peak_bytes,
        "error": worst.peak_bytes / traced.peak_bytes - 1,
        "traced_phase": traced.peak_phase,
        "closed_moment": worst.peak_phase,
        "traced_breakdown": {k: v for k, v in traced.breakdown.items() if v},
        "closed_breakdown": worst.breakdown,
        "traced_s": traced_s,
        "closed_s": closed_s,
    }


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    )
    return out.stdout.strip()


def main() -> None:
    import torch

    rows = [run(label, fields) for label, fields in LAYOUTS]
    done = [r for r in rows if isinstance(r.get("error"), float)]
    worst = max((abs(r["error"]) for r in done), default=0.0)
    meta = {
        "machine": f"{platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": _commit(),
        "model": "benchmarks/configs/tiny-llama.json",
        "device": DEVICE,
        "target": TARGET,
        "max_abs_error": worst,
    }
    results = HERE / "results"
    (results / "analytic-vs-traced.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Closed form against trace: layouts of a small Llama",
        "",
        "Reproduce: `python benchmarks/analytic_vs_traced.py`",
        "",
        f"Machine: {meta['machine']}; Python {meta['python']}, torch {meta['torch']}; commit "
        f"{meta['commit']}. Model: `{meta['model']}` (4 layers, hidden 256, 8 heads, 4 key/value "
        f"heads, vocabulary 4096); target {DEVICE}; batch 2 per rank, sequence 256, Adam, "
        "eager attention unless said, use_cache=False (the closed form leaves the returned "
        "key/value cache out and says so). *traced*: `memlens.estimate(..., analytic=False)` (one "
        "GPU, or the worst rank of the layout traced on PyTorch's DDP reducer model, FSDP2 and "
        "tensor-parallel code over a fake process group); *closed form*: "
        "`memlens.analytic.estimate.analytic_estimate` (the worst pipeline stage). Both: the "
        "allocated peak, cuBLAS workspaces included, CUDA context and NCCL excluded.",
        "",
        "| layout | traced | closed form | error | traced peak at | closed-form moment | "
        "trace s | closed form ms |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    from memlens.units import fmt_bytes

    for r in rows:
        if not isinstance(r.get("error"), float):
            lines.append(f"| {r['layout']} | not traced: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['layout']} | {fmt_bytes(r['traced_peak_bytes'])} | "
            f"{fmt_bytes(r['closed_peak_bytes'])} | {r['error']:+.2%} | {r['traced_phase']} | "
            f"{r['closed_moment']} | {r['traced_s']:.1f} | {1000 * r['closed_s']:.1f} |"
        )
    verdict = "met" if worst <= TARGET and len(done) >= 6 else "NOT met"
    lines += [
        "",
        f"Target (within {TARGET:.0%} on at least six layouts): {verdict} ({len(done)} layouts, "
        f"worst |error| {worst:.2%}).",
        "",
    ]
    (results / "analytic-vs-traced.md").write_text("\n".join(lines))
    print("\n".join(lines))
    sys.exit(0 if verdict == "met" else 1)


if __name__ == "__main__":
    main()
