"""Op-level differential test over the broad zoo: each distinct ATen call, run alone for real.

    python benchmarks/opdiff.py [--only LABEL] [--out DIR] [--device cuda [--target GPU]]

Every workload of ``zoo.py:BROAD`` is traced for a CPU target (inference and training with
Adam, whose ops include SGD-momentum's); each distinct op call the engine saw (op, shapes,
strides, dtypes, arguments, grad mode) is run once on real CPU tensors under the profiler's
allocation records (``memlens.measurement.opdiff``). Reported: every call whose peak or kept
bytes differ from the engine's by more than ``max(1%, 64 KiB)``; those a known cause
explains (:data:`REASONS`: a kernel no CPU rule models yet, with its source) are listed
apart, under "Remaining, with reasons". Writes ``benchmarks/results/opdiff-cpu.md`` and
``.json``. With ``--device cuda`` (a GPU needed) the traces are made for a CUDA target
(``--target``, a catalog device) and each call runs on CUDA tensors, measured with the
caching allocator's statistics: the CUDA kernel rules checked op by op
(``opdiff-cuda.*``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memlens.measurement.opdiff import FLOOR, Call, Calls, collect, replay

HERE = Path(__file__).resolve().parent
MODES: list[dict[str, Any]] = [{"mode": "inference"}, {"mode": "train", "optimizer": "adam"}]


@dataclass(frozen=True)
class Reason:
    """A known cause of reported calls: calls of ``op`` that ``applies`` matches differ because
    a kernel runs that no CPU rule models yet; ``why`` names it and its source."""

    op: str
    applies: Callable[[Call], bool]
    why: str


#: Known causes of reported calls, each a kernel no CPU rule models yet (none left over the
#: broad zoo: the last, 3x3 depthwise weight gradients on maps smaller than the filter falling
#: to oneDNN's gemm kernel, is modelled in ``cpu_onednn_conv._direct_weight_grad``).
REASONS: list[Reason] = []


def reason(c: Call) -> str | None:
    """The known cause of a reported call's difference, if :data:`REASONS` has one."""
    return next((r.why for r in REASONS if r.op == c.name and r.applies(c)), None)


def _row(c: Call) -> dict[str, Any]:
    """One op call of the results' JSON."""
    return {
        "op": c.name,
        "call": c.signature,
        "count": c.count,
        "workloads": sorted(c.workloads),
        "engine_peak_bytes": c.engine_peak,
        "real_peak_bytes": c.real_peak,
        "engine_kept_bytes": c.engine_kept,
        "real_kept_bytes": c.real_kept,
        "difference_bytes": c.difference,
        "skipped": c.skipped,
        "reason": reason(c) if c.reported else None,
    }


def _size(n: int) -> str:
    sign = "-" if n < 0 else ("+" if n > 0 else "")
    n = abs(n)
    if n >= 2**20:
        return f"{sign}{n / 2**20:,.2f} MiB"
    if n >= 2**10:
        return f"{sign}{n / 2**10:,.1f} KiB"
    return f"{sign}{n} B"


def markdown(calls: Calls, failed: list[str], cmd: str, seconds: float, device: str = "cpu") -> str:
    every = list(calls.calls.values())
    replayed = [c for c in every if c.real_peak is not None]
    skipped_calls = [c for c in every if c.skipped is not None]
    reported = sorted((c for c in every if c.reported), key=lambda c: -abs(c.difference))
    explained = [c for c in reported if reason(c) is not None]
    unexplained = [c for c in reported if reason(c) is None]
    skipped = Counter(c.skipped.split(":")[0] + f" ({c.name})" for c in every if c.skipped)
    lines = [
        f"# Op-level differential test on {device}",
        "",
        f"Reproduce: `{cmd}` (torch {torch.__version__}, {platform.machine()}, "
        + (
            f"{torch.cuda.get_device_name()}, "
            if device == "cuda"
            else f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        )
        + f"{seconds / 60:.0f} min). Each distinct ATen call of the broad zoo's "
        f"{'CUDA-target' if device == 'cuda' else 'CPU'} traces (inference, training with Adam) "
        f"run alone on real {device} tensors of the same shapes, strides and dtypes; peak = "
        + (
            "max_memory_allocated's rise during the call (after a warm-up call), kept = "
            "memory_allocated's rise when it returns. "
            if device == "cuda"
            else "largest rise of the CPU allocator's running total during the call, kept = "
            "what it still holds when the call returns. "
        )
        + f"Reported: a difference above max(1%, {FLOOR // 1024} KiB).",
        "",
        f"- distinct calls: {len(every)} (from {sum(c.count for c in every)} calls)",
        f"- replayed: {len(replayed)}; could not run alone: {len(skipped_calls)}; "
        f"not replayed (run stopped): {len(every) - len(replayed) - len(skipped_calls)}",
        f"- exact to the byte (peak and kept): {sum(c.difference == 0 for c in replayed)}; "
        f"largest difference under the floor: "
        f"{_size(max((abs(c.difference) for c in replayed if not c.reported), default=0))}",
        f"- reported: {len(reported)}; without a known cause: {len(unexplained)}, with one "
        f"(Remaining, with reasons): {len(explained)}",
        f"- workloads that failed to trace: {len(failed)}",
        "",
    ]
    if unexplained:
        lines += _table(unexplained)
    if explained:
        lines += ["", "## Remaining, with reasons", ""]
        for why in dict.fromkeys(reason(c) for c in explained):
            lines += ["", f"{why}.", ""]
            lines += _table([c for c in explained if reason(c) == why])
    if skipped:
        lines += ["", "Calls that could not run alone (inputs without their values):", ""]
        lines += [f"- {reason}: {n}" for reason, n in skipped.most_common()]
    if failed:
        lines += ["", "Workloads that failed to trace:", "", *[f"- {f}" for f in failed]]
    return "\n".join(lines) + "\n"


def _table(calls: list[Call]) -> list[str]:
    lines = [
        "| difference | op call | engine peak / kept | real peak / kept | calls | in |",
        "|---|---|---|---|---|---|",
    ]
    for c in calls:
        where = ", ".join(sorted(c.workloads)[:3]) + (" ..." if len(c.workloads) > 3 else "")
        lines.append(
            f"| {_size(c.difference)} | `{c.signature[:160]}` | {_size(c.engine_peak)} / "
            f"{_size(c.engine_kept)} | {_size(c.real_peak or 0)} / "
            f"{_size(c.real_kept or 0)} | {c.count} | {where} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="only these zoo labels")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="run each call on this device (cuda: the calls of a CUDA target's traces)",
    )
    parser.add_argument(
        "--target",
        default="cuda",
        help="with --device cuda: the catalog device the traces are made for (default: a "
        "generic CUDA GPU)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU (torch.cuda.is_available() is False here)")
    target = "cpu" if args.device == "cpu" else args.target
    sys.path.insert(0, str(HERE))
    import zoo  # type: ignore[import-not-found]

    t0 = time.perf_counter()
    calls, failed = Calls(), []
    for label, model, _, shape, inputs in zoo.BROAD:
        if args.only and label not in args.only:
            continue
        spec = model.replace("zoo.py:", f"{HERE / 'zoo.py'}:", 1)
        for mode in MODES:
            name = f"{label} {mode['mode']}"
            try:
                collect(
                    calls,
                    name,
                    spec,
                    device=target,
                    inputs=getattr(zoo, inputs) if inputs else None,
                    **shape,
                    **mode,
                )
            except Exception as e:  # a failure is a result too
                failed.append(f"{name}: {type(e).__name__}: {e}"[:300])
        print(f"{label:20s} {len(calls.calls)} distinct calls", flush=True)
    cmd = "python benchmarks/opdiff.py" + "".join(f" --only {o}" for o in args.only or [])
    if args.device == "cuda":
        cmd += f" --device cuda --target {args.target}"
    for i, call in enumerate(calls.calls.values()):
        replay(call, args.device)
        if call.reported:
            known = " (known cause)" if reason(call) else ""
            print(f"{_size(call.difference):>12s} {call.signature[:150]}{known}", flush=True)
        if i % 500 == 499:
            print(f"... {i + 1} replayed", flush=True)
            _write(Path(args.out), args.device, calls, failed, cmd, time.perf_counter() - t0)
    _write(Path(args.out), args.device, calls, failed, cmd, time.perf_counter() - t0)
    reported = [c for c in calls.calls.values() if c.reported]
    known = sum(reason(c) is not None for c in reported)
    print(f"{len(reported)} reported of {len(calls.calls)} calls ({known} with a known cause)")


def _write(
    out: Path, device: str, calls: Calls, failed: list[str], cmd: str, seconds: float
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    every = list(calls.calls.values())
    replayed = [c for c in every if c.real_peak is not None]
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    (out / f"opdiff-{device}.json").write_text(
        json.dumps(
            {
                "command": cmd,
                "torch": torch.__version__,
                "gpu": gpu,
                "isa": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "distinct_calls": len(every),
                "replayed": len(replayed),
                "exact_calls": sum(c.difference == 0 for c in replayed),
                "largest_difference_under_floor_bytes": max(
                    (abs(c.difference) for c in replayed if not c.reported), default=0
                ),
                "reported": [_row(c) for c in every if c.reported],
                "skipped": [_row(c) for c in every if c.skipped],
                "failed": failed,
            },
            indent=1,
        )
    )
    (out / f"opdiff-{device}.md").write_text(markdown(calls, failed, cmd, seconds, device))


if __name__ == "__main__":
    main()
