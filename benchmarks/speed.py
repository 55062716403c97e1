"""Speed benchmark: how long one estimate takes, in-process and as a fresh CLI process.

    python benchmarks/speed.py [--repeat 5]

Writes ``benchmarks/results/speed-cpu.md`` and ``.json``: the median of ``--repeat`` runs of
``memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")`` after one
warm-up (imports done), and of the whole ``memlens estimate ... --json`` command (process start,
imports, build, trace, replay). The machine is shared and noisy: medians, one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import memlens

HERE = Path(__file__).resolve().parent
CASES = [
    ("resnet50 train adam b32", "resnet50", {"batch": 32, "optimizer": "adam"}),
    ("resnet50 inference b32", "resnet50", {"batch": 32, "mode": "inference"}),
    ("vit_b_16 train adamw b32", "vit_b_16", {"batch": 32, "optimizer": "adamw"}),
    ("gpt2 train adamw b8 s1024", "gpt2", {"batch": 8, "seq_len": 1024, "optimizer": "adamw"}),
    ("llama-3-8b train adamw b1 s2048", "llama-3-8b", {"seq_len": 2048, "optimizer": "adamw"}),
]


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for label, model, kwargs in CASES:
        memlens.estimate(model, device="v100-16gb", **kwargs)  # warm-up: imports, caches
        in_process = _median_seconds(
            lambda m=model, k=kwargs: memlens.estimate(m, device="v100-16gb", **k), args.repeat
        )
        flags = [f"--batch={kwargs.get('batch', 1)}", "--gpu=v100-16gb", "--json"]
        if "seq_len" in kwargs:
            flags.append(f"--seq-len={kwargs['seq_len']}")
        if kwargs.get("mode") == "inference":
            flags.append("--inference")
        else:
            flags.append(f"--optimizer={kwargs['optimizer']}")
        cmd = [sys.executable, "-m", "memlens", "estimate", model, *flags]
        cli = _median_seconds(
            lambda c=cmd: subprocess.run(c, check=True, capture_output=True),
            max(1, args.repeat // 2),
        )
        rows.append(
            {"case": label, "in_process_s": in_process, "cli_s": cli, "command": " ".join(cmd[1:])}
        )
        print(f"{label:34s} in-process {in_process:6.2f} s   CLI {cli:6.2f} s", flush=True)
    cmd = f"python benchmarks/speed.py --repeat {args.repeat}"
    out = HERE / "results"
    (out / "speed-cpu.json").write_text(
        json.dumps({"command": cmd, "torch": torch.__version__, "rows": rows}, indent=2)
    )
    lines = [
        "# memlens estimate time",
        "",
        f"Reproduce: `{cmd}` (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "2-core shared machine). Median of runs; target device v100-16gb.",
        "",
        "| case | estimate in-process (s) | whole CLI command (s) |",
        "|---|---|---|",
        *[f"| {r['case']} | {r['in_process_s']:.2f} | {r['cli_s']:.2f} |" for r in rows],
    ]
    (out / "speed-cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
