"""Accuracy benchmark: memlens's estimate against the real step, over a zoo of workloads.

    python benchmarks/accuracy.py [--device cpu|cuda] [--zoo default|broad] [--only NAME]

Each workload is estimated (fake tensors) and then run for real on the device; the real
run's peak comes from the allocator itself (CPU: the profiler's allocation records; CUDA:
``max_memory_allocated`` / ``max_memory_reserved``). Writes
``benchmarks/results/accuracy-<device>.md`` and ``.json`` (``--zoo broad``: the broad zoo of
``zoo.py:BROAD``, by architecture family, without the what-if rows, to
``accuracy-broad-<device>.*``). Timing is wall-clock on this
machine, in one process; the estimate/step ratio compares one estimate (build + trace +
allocator replay) with one steady-state real step.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import memlens
from memlens.measurement.compare import compare_with_run

HERE = Path(__file__).resolve().parent
MLP = f"{HERE / 'zoo.py'}:mlp"

#: (label, model, kind of network, shape arguments). Batch sizes are the ones people train with
#: on such models, kept small enough for a 2-core, 24 GiB machine.
ZOO: list[tuple[str, str, str, dict[str, Any]]] = [
    ("mlp", MLP, "MLP", {"batch": 64, "input_shape": (3, 64, 64)}),
    ("alexnet", "alexnet", "plain CNN", {"batch": 32}),
    ("vgg11", "vgg11", "plain CNN", {"batch": 8}),
    ("resnet18", "resnet18", "residual CNN", {"batch": 32}),
    ("resnet50", "resnet50", "residual CNN", {"batch": 16}),
    ("mobilenet_v2", "mobilenet_v2", "depthwise CNN", {"batch": 32}),
    ("efficientnet_b0", "efficientnet_b0", "depthwise CNN + SE", {"batch": 16}),
    ("squeezenet1_1", "squeezenet1_1", "fire modules", {"batch": 32}),
    ("densenet121", "densenet121", "dense CNN", {"batch": 8}),
    ("vit_b_16", "vit_b_16", "vision transformer", {"batch": 8}),
    ("bert-base-uncased", "bert-base-uncased", "encoder transformer", {"batch": 8, "seq_len": 128}),
    ("gpt2", "gpt2", "decoder transformer", {"batch": 4, "seq_len": 256}),
]
MODES: list[dict[str, Any]] = [
    {"mode": "inference"},
    {"mode": "train", "optimizer": "sgd-momentum"},
    {"mode": "train", "optimizer": "adam"},
]


def _strategy_rows() -> list[tuple[str, str, str, dict[str, Any]]]:
    """Rows for the what-if options, if the strategies module provides them."""
    try:
        sys.path.insert(0, str(HERE))
        from strategy_rows import ROWS  # type: ignore[import-not-found]
    except ImportError:
        return []
    return [(r["label"], r["model"], r.get("kind", "strategy"), r["kwargs"]) for r in ROWS]


def _broad_rows() -> list[tuple[str, str, str, dict[str, Any], Any]]:
    """The broad zoo (``zoo.py:BROAD``): its factories as paths, its input functions."""
    sys.path.insert(0, str(HERE))
    import zoo  # type: ignore[import-not-found]

    def spec(model: str) -> str:
        return model.replace("zoo.py:", f"{HERE / 'zoo.py'}:", 1)

    return [
        (label, spec(model), kind, shape, getattr(zoo, inputs) if inputs else None)
        for label, model, kind, shape, inputs in zoo.BROAD
    ]


def run_row(model: str, device: str, kwargs: dict[str, Any], inputs: Any = None) -> dict[str, Any]:
    gc.collect()
    t0 = time.perf_counter()
    est = memlens.estimate(model, device=device, inputs=inputs, **kwargs)
    est_seconds = time.perf_counter() - t0
    gc.collect()
    # measures the estimate's own workload and target: no second trace for measure's guard
    m = compare_with_run(model, est, inputs=inputs)
    row = {
        "estimate_bytes": est.peak_bytes,
        "measured_bytes": m.peak_bytes,
        "error": (est.peak_bytes - m.peak_bytes) / m.peak_bytes,
        "estimate_seconds": est_seconds,
        "step_seconds": m.step_seconds,
        "ratio": est_seconds / m.step_seconds,
        "peak_phase": est.peak_phase,
        "num_params": est.num_params,
    }
    if device == "cuda":
        row["estimate_reserved_bytes"] = est.reserved_peak_bytes
        row["measured_reserved_bytes"] = m.reserved_peak_bytes
        row["reserved_error"] = (
            est.reserved_peak_bytes - m.reserved_peak_bytes
        ) / m.reserved_peak_bytes
        row["measured_process_bytes"] = m.process_bytes
        row["estimate_total_bytes"] = est.total_bytes
    if est.first_step_peak_bytes is not None and m.first_step_peak_bytes:
        row["first_step_error"] = (
            est.first_step_peak_bytes - m.first_step_peak_bytes
        ) / m.first_step_peak_bytes
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(sel: list[dict[str, Any]], key: str) -> dict[str, float]:
        errs = [abs(r[key]) for r in sel if key in r]
        if not errs:
            return {}
        return {"median_abs": statistics.median(errs), "max_abs": max(errs), "n": len(errs)}

    ok = [r for r in rows if "error" in r]
    zoo = [r for r in ok if r["group"] == "zoo"]
    out = {
        "train": stats([r for r in zoo if r["mode"] == "train"], "error"),
        "inference": stats([r for r in zoo if r["mode"] == "inference"], "error"),
        "train sgd-momentum": stats([r for r in zoo if r["optimizer"] == "sgd-momentum"], "error"),
        "train adam": stats([r for r in zoo if r["optimizer"] == "adam"], "error"),
        "strategies": stats([r for r in ok if r["group"] == "strategy"], "error"),
        "all": stats(ok, "error"),
        "median_ratio": statistics.median(r["ratio"] for r in zoo) if zoo else None,
        "failed": [f"{r['label']} {r['mode']}: {r['failure']}" for r in rows if "failure" in r],
    }
    if any("reserved_error" in r for r in ok):
        out["reserved"] = stats(ok, "reserved_error")
    return out


def markdown(device: str, rows: list[dict[str, Any]], summary: dict[str, Any], cmd: str) -> str:
    pct = lambda x: f"{100 * x:+.2f}%"  # noqa: E731
    mib = lambda n: f"{n / 2**20:,.1f}"  # noqa: E731
    lines = [
        f"# memlens accuracy on {device}",
        "",
        f"Reproduce: `{cmd}` (torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads). Sizes in MiB (2^20 bytes). Error = (estimate - "
        "measured) / measured of the peak allocated bytes of one steady-state step.",
        "",
        "| summary | median abs error | max abs error | rows |",
        "|---|---|---|---|",
    ]
    keys = ("train", "train sgd-momentum", "train adam", "inference", "strategies", "all")
    for key in (*keys, "reserved"):
        s = summary.get(key)
        if s:
            lines.append(
                f"| {key} | {100 * s['median_abs']:.2f}% | {100 * s['max_abs']:.2f}% | {s['n']} |"
            )
    lines += [
        "",
        "Rows `train` and `inference` are the zoo; `strategies` the what-if rows "
        "(benchmarks/strategy_rows.py).",
        "",
        f"Median estimate time / real step time over the zoo: {summary['median_ratio']:.3f}",
        "",
        "| workload | network | mode | estimate MiB | measured MiB | error | estimate s | step s "
        "| ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = r["mode"] if r["mode"] == "inference" else f"train {r.get('optimizer', '')}"
        if "failure" in r:
            lines.append(f"| {r['label']} | {r['kind']} | {mode} | failed: {r['failure']} |||||")
            continue
        lines.append(
            f"| {r['label']} {r['shape']} | {r['kind']} | {mode} | {mib(r['estimate_bytes'])} | "
            f"{mib(r['measured_bytes'])} | {pct(r['error'])} | {r['estimate_seconds']:.2f} | "
            f"{r['step_seconds']:.2f} | {r['ratio']:.3f} |"
        )
    if summary["failed"]:
        lines += ["", "Failed rows:", *[f"- {f}" for f in summary["failed"]]]
    return "\n".join(lines) + "\n"


def _merge(args: argparse.Namespace) -> None:
    """One result from runs of disjoint ``--only`` shards (run side by side), in zoo order."""
    broad = args.zoo == "broad"
    name = f"accuracy-broad-{args.device}" if broad else f"accuracy-{args.device}"
    rows = [
        r for d in args.merge for r in json.loads((Path(d) / f"{name}.json").read_text())["rows"]
    ]
    seen: set[tuple] = set()  # a row run by two shards counts once
    rows = [
        r
        for r in rows
        if (key := (r["label"], r["mode"], r["optimizer"])) not in seen and not seen.add(key)
    ]
    order = [z[0] for z in (_broad_rows() if broad else ZOO)]
    rows.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))
    summary = summarize(rows)
    cmd = (
        "python benchmarks/accuracy.py --device " + args.device + (" --zoo broad" if broad else "")
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps(
            {"command": cmd, "torch": torch.__version__, "summary": summary, "rows": rows}, indent=2
        )
    )
    (out / f"{name}.md").write_text(markdown(args.device, rows, summary, cmd))
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--zoo", choices=("default", "broad"), default="default")
    parser.add_argument("--only", action="append", help="only these zoo labels")
    parser.add_argument("--no-strategies", action="store_true", help="skip the what-if rows")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="only merge the results of runs of disjoint --only shards (in DIRs) into --out",
    )
    args = parser.parse_args()
    if args.merge:
        _merge(args)
        return
    # One-time imports (torchvision, transformers) are not part of any row's estimate time.
    memlens.estimate(MLP, batch=1, input_shape=(3, 64, 64), device=args.device)
    memlens.estimate("squeezenet1_1", batch=1, device=args.device)
    memlens.estimate("gpt2", batch=1, seq_len=8, mode="inference", device=args.device)
    rows: list[dict[str, Any]] = []
    broad = args.zoo == "broad"
    zoo_rows = _broad_rows() if broad else [(*z, None) for z in ZOO]
    workloads = [(*z, mode, "zoo") for z in zoo_rows for mode in MODES]
    if not args.no_strategies and not broad:
        workloads += [(*row, None, {}, "strategy") for row in _strategy_rows()]
    for label, model, kind, shape, inputs, mode, group in workloads:
        if args.only and label not in args.only:
            continue
        kwargs = {**shape, **mode}
        row: dict[str, Any] = {
            "label": label,
            "group": group,
            "model": model.replace(f"{HERE}/", "") if model != MLP else "zoo.py:mlp",
            "inputs": inputs.__name__ if inputs else None,
            "kind": kind,
            "shape": ", ".join(f"{k}={v}" for k, v in shape.items()),
            "mode": kwargs.get("mode", "train"),
            "optimizer": kwargs.get("optimizer", "adam")
            if kwargs.get("mode", "train") == "train"
            else None,
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        }
        try:
            row.update(run_row(model, args.device, kwargs, inputs))
            print(
                f"{label:20s} {row['mode']:9s} {row['optimizer'] or '':13s}"
                f" error {100 * row['error']:+6.2f}%  est {row['estimate_seconds']:.2f}s"
                f" step {row['step_seconds']:.2f}s",
                flush=True,
            )
        except Exception as e:  # a failure is a result too
            row["failure"] = f"{type(e).__name__}: {e}"
            print(f"{label:20s} FAILED {row['failure']}", flush=True)
        rows.append(row)
        summary = _write(args, broad, rows)  # after each row: a long run leaves its results
    print(json.dumps(summary, indent=2))


def _write(args: argparse.Namespace, broad: bool, rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarize(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = (
        "python benchmarks/accuracy.py --device " + args.device + (" --zoo broad" if broad else "")
    )
    name = f"accuracy-broad-{args.device}" if broad else f"accuracy-{args.device}"
    (out / f"{name}.json").write_text(
        json.dumps(
            {"command": cmd, "torch": torch.__version__, "summary": summary, "rows": rows}, indent=2
        )
    )
    (out / f"{name}.md").write_text(markdown(args.device, rows, summary, cmd))
    return summary


if __name__ == "__main__":
    main()
