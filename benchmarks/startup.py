"""Startup benchmark: how long commands take from the shell, against what they must import.

    python benchmarks/startup.py [--repeat 5]

Writes ``benchmarks/results/startup-cpu.md`` and ``.json``: the median wall-clock time of
``--repeat`` fresh processes of each command (run in turns, so that the shared machine's load
falls on every command alike), and the median in-process time of the same estimate once its
imports are done. It checks the targets of a fast start:

- ``memlens --help`` and ``memlens devices`` under 0.5 s (they import no torch);
- ``memlens estimate resnet50 --batch 32 --gpu v100-16gb`` within 1.5x of what it cannot
  avoid: ``python -c "import torch, torchvision"`` plus the in-process estimate.

Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Seconds ``--help`` and ``devices`` may take.
INSTANT_S = 0.5
#: How much slower than its unavoidable imports plus its trace the shell estimate may be.
ESTIMATE_RATIO = 1.5
MODEL, ESTIMATE_ARGS = "resnet50", ["--batch", "32", "--gpu", "v100-16gb"]


def _memlens() -> list[str]:
    """The console script a user runs (``python -m memlens`` if it is not installed)."""
    script = Path(sys.executable).parent / "memlens"
    if script.exists():
        return [str(script)]
    found = shutil.which("memlens")
    return [found] if found else [sys.executable, "-m", "memlens"]


def _commands() -> dict[str, list[str]]:
    memlens = _memlens()
    return {
        "memlens --help": [*memlens, "--help"],
        "memlens devices": [*memlens, "devices"],
        "memlens size 70B": [*memlens, "size", "70B"],
        'python -c "import torch, torchvision"': [
            sys.executable,
            "-c",
            "import torch, torchvision",
        ],
        f"memlens estimate {MODEL} {' '.join(ESTIMATE_ARGS)}": [
            *memlens,
            "estimate",
            MODEL,
            *ESTIMATE_ARGS,
        ],
    }


def _shell_medians(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, argv in commands.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(ts) for label, ts in times.items()}


def _in_process_estimate(repeat: int) -> float:
    """Median seconds of ``memlens.estimate`` for the shell command's workload, warm."""
    import memlens

    def run() -> None:
        memlens.estimate(MODEL, batch=32, device="v100-16gb")

    run()  # imports and caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    commands = _commands()
    shell = _shell_medians(commands, args.repeat)
    trace = _in_process_estimate(args.repeat)

    import torch

    labels = list(commands)
    help_s, devices_s, size_s, imports_s, estimate_s = (shell[label] for label in labels)
    floor = imports_s + trace
    checks = [
        ("memlens --help", help_s, f"< {INSTANT_S} s", help_s < INSTANT_S),
        ("memlens devices", devices_s, f"< {INSTANT_S} s", devices_s < INSTANT_S),
        (
            labels[4],
            estimate_s,
            f"<= {ESTIMATE_RATIO} x (imports {imports_s:.2f} s + estimate {trace:.2f} s) "
            f"= {ESTIMATE_RATIO * floor:.2f} s (ratio {estimate_s / floor:.2f})",
            estimate_s <= ESTIMATE_RATIO * floor,
        ),
    ]
    cmd = f"python benchmarks/startup.py --repeat {args.repeat}"
    rows = [{"command": label, "median_s": round(shell[label], 3)} for label in labels]
    rows.append({"command": f"memlens.estimate({MODEL!r}) in-process", "median_s": round(trace, 3)})
    out = HERE / "results"
    (out / "startup-cpu.json").write_text(
        json.dumps(
            {
                "command": cmd,
                "torch": torch.__version__,
                "repeat": args.repeat,
                "rows": rows,
                "targets": [
                    {"what": w, "seconds": round(s, 3), "target": t, "met": ok}
                    for w, s, t, ok in checks
                ],
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "# memlens startup time",
        "",
        f"Reproduce: `{cmd}` (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "2-core machine shared with other work). Median wall-clock seconds of fresh processes "
        "run in turns; the in-process estimate is warm (imports done).",
        "",
        "| command | median (s) |",
        "|---|---|",
        *[f"| `{r['command']}` | {r['median_s']:.2f} |" for r in rows],
        "",
        "| target | measured (s) | limit | met |",
        "|---|---|---|---|",
        *[f"| `{w}` | {s:.2f} | {t} | {'yes' if ok else 'NO'} |" for w, s, t, ok in checks],
    ]
    (out / "startup-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
