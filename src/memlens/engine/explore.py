"""Trace both answers of each data-dependent read, and keep the branch with the largest peak.

A trace on fake tensors cannot know a value computed from the inputs, so a read of one
(``if y.abs().sum() < 0:``, ``.item()``, the size of ``nonzero``) gets a neutral answer
(:class:`~memlens.engine.shadow.Reads`): a real run may take the other branch. Under the
``explore`` policy, :func:`explore` traces once more per read site (reads grouped by the
source line that read them, sites found in a flipped trace explored too, at most
:data:`MAX_BRANCHES` extra traces), each with that site's other answer, and returns the
trace with the largest peak, with what it found in :attr:`Trace.branches`: every branch's
peak, the branch chosen (site and answer) and the range of peaks. A branch whose code fails
with the other answer (an assertion) cannot run for real and is listed with its error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memlens._errors import TraceError
from memlens.engine.shadow import EndlessRead
from memlens.engine.trace import Trace
from memlens.units import fmt_bytes

#: Most extra traces one estimate explores.
MAX_BRANCHES = 16


def explore(
    run: Callable[[str | None], Trace],
    peak: Callable[[Trace], int],
    policy: str,
    limit: int = MAX_BRANCHES,
) -> Trace:
    """The trace ``run(None)`` (neutral answers) or, under ``explore``, the one of largest
    ``peak`` among it and ``run(site)`` for each read site (that site's other answer)."""
    endless: list[dict[str, Any]] = []
    done: list[str] = []
    try:
        base = run(None)
    except EndlessRead as e:
        if policy != "explore":
            raise
        # the neutral answer never ends the loop: its other answer does
        endless.append({"branch": "neutral", "peak_bytes": None, "error": e.reason})
        done.append(e.site)
        base = run(e.site)
    if not base.reads or policy == "fail":
        return base
    sites = _sites(base)
    if endless:
        endless[0]["branch"] = f"neutral (the loop at {done[0]})"
    if policy != "explore":
        base.branches = _summary(policy, sites, [_row(None, peak(base))], 0, [])
        return base
    peaks = [peak(base)]
    rows: list[dict[str, Any]] = [*endless, _row(done[0] if done else None, peaks[0], sites)]
    traces: list[Trace] = [base]
    queue = [site for site in sites if site not in done]
    while queue and len(done) < limit:
        site = queue.pop(0)
        done.append(site)
        try:
            flipped = run(site)
        except TraceError as e:
            rows.append({"branch": _label(site, sites), "peak_bytes": None, "error": e.reason})
            continue
        peaks.append(peak(flipped))
        rows.append(_row(site, peaks[-1], sites))
        traces.append(flipped)
        for new, read in _sites(flipped).items():
            if new not in sites:
                sites[new] = read
                queue.append(new)
    best = max(range(len(traces)), key=peaks.__getitem__)
    chosen = traces[best]
    chosen.branches = _summary(policy, sites, rows, len(done), queue)
    chosen.branches["chosen"] = [r for r in rows if r["peak_bytes"] is not None][best]["branch"]
    return chosen


def _sites(t: Trace) -> dict[str, dict[str, Any]]:
    """Read sites of a trace, in the order first read: module, kind, neutral answer, count."""
    out: dict[str, dict[str, Any]] = {}
    for r in t.reads:
        site = out.setdefault(
            r.site, {"site": r.site, "module": r.module, "kind": r.kind, "reads": 0}
        )
        site["reads"] += 1
        site.setdefault("answer", r.answer)
        site["module"] = site["module"] or r.module  # the warm-up step runs without modules
    return out


def _other(kind: str) -> str:
    return {"bool": "False", "int": "0", "float": "0.0", "size": "none"}[kind]


def _label(site: str | None, sites: dict[str, dict[str, Any]] | None = None) -> str:
    """``neutral``, or ``site -> other answer``."""
    if site is None:
        return "neutral"
    kind = sites[site]["kind"] if sites and site in sites else "bool"
    return f"{site} -> {_other(kind)}"


def _row(
    site: str | None, nbytes: int, sites: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"branch": _label(site, sites), "peak_bytes": nbytes, "error": None}


def _summary(
    policy: str,
    sites: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    explored: int,
    left: list[str],
) -> dict[str, Any]:
    peaks = [r["peak_bytes"] for r in rows if r["peak_bytes"] is not None]
    return {
        "policy": policy,
        "sites": list(sites.values()),
        "branches": rows,
        "chosen": "neutral",
        "peak_range": [min(peaks), max(peaks)],
        "explored": explored,
        "unexplored": left,
    }


def unknowns(branches: dict[str, Any] | None) -> list[str]:
    """What the estimate says about its data-dependent reads."""
    if not branches:
        return []
    sites = branches["sites"]
    where = ", ".join(
        f"{s['site']} ({s['module'] or '<root>'}, {s['kind']}: {s['answer']})" for s in sites[:5]
    )
    more = f" and {len(sites) - 5} more" if len(sites) > 5 else ""
    n = sum(s["reads"] for s in sites)
    head = f"{n} data-dependent read(s) at {len(sites)} site(s): {where}{more}"
    if branches["policy"] == "neutral":
        return [
            f"{head}; answered with neutral values (data_dependent=neutral): a real run may "
            "take other branches"
        ]
    lo, hi = branches["peak_range"]
    out = [
        f"{head}; explored {branches['explored']} other answer(s): peaks from {fmt_bytes(lo)} to "
        f"{fmt_bytes(hi)}, the estimate is the largest (branch {branches['chosen']})"
    ]
    rows = branches["branches"]
    for r in rows:
        if r["error"] and r["branch"].startswith("neutral (the loop at "):
            site = r["branch"].removeprefix("neutral (the loop at ").removesuffix(")")
            out.append(
                f"{site} was read over and over with the neutral answer (a loop on values "
                "computed from the inputs): traced with its other answer, which ends it; how "
                "often a real run reads it (its real iteration count) is unknown"
            )
    failed = [r["branch"] for r in rows if r["error"] and not r["branch"].startswith("neutral")]
    if failed:
        out.append(f"branches that fail when traced (cannot run for real): {', '.join(failed)}")
    if branches["unexplored"]:
        out.append(
            f"{len(branches['unexplored'])} read site(s) not explored (limit {MAX_BRANCHES} "
            f"traces), answered neutrally: {', '.join(branches['unexplored'][:5])}"
        )
    return out
