"""A result as one self-contained HTML page: :func:`render_html`, :func:`write_html`.

The page holds everything it shows: Chart.js (vendored under ``report/assets/`` with its
license; chosen because one small, well-kept MIT library draws every chart here: stacked
areas, lines and horizontal bars, with hover tooltips), the page's own script and style
(``report.js``, ``report.css``) and the data, as JSON in a ``<script type=application/json>``
element. Nothing is fetched: the file opens from ``file://`` offline. ``memlens ui`` renders
results with the same script and the same data (:func:`page_data`).

The data is :func:`memlens.report.json.to_json` of the result plus, for an estimate (the
``at_max`` one of a fit, the largest fitting one of a sweep), its step timeline sampled to at
most :data:`POINTS` points: allocated bytes stacked by category (allocator-accounted sizes,
so the stack sums to the allocated curve), the reserved curve on a caching allocator, the
phases, the peak, and the blocks live at the sampled points (for the hover). Each bucket of
events keeps its highest point, and the peak event is always kept, so the drawn peak is the
estimate's ``peak_bytes``. Per-module bars are the bytes of parameters and of activations
kept for backward, by module, at the depth that gives at most :data:`MODULE_GROUPS` rows.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

from memlens.categories import Category, Phase

#: Most points of a drawn timeline.
POINTS = 1500
#: Most blocks listed for the hover (the largest are kept); their bytes are in the stack anyway.
MAX_BLOCKS = 12_000
#: Most rows of the per-module bars.
MODULE_GROUPS = 24


def asset(name: str) -> str:
    """A file of ``memlens/report/assets`` as text (source-map comments removed: the page
    must not ask for anything)."""
    text = files("memlens.report").joinpath("assets", name).read_text(encoding="utf-8")
    return "\n".join(
        line for line in text.splitlines() if not line.startswith("//# sourceMappingURL=")
    )


def page_data(result: Any) -> dict[str, Any]:
    """What the page draws: the result's JSON, its timeline, per-module bars and batch
    curve where it has them, and the memlens version."""
    from memlens import __version__
    from memlens.report.json import to_json

    data: dict[str, Any] = {"version": __version__, "result": to_json(result)}
    kind = data["result"]["kind"]
    est = None
    if kind == "estimate":
        est = result
    elif kind == "fit":
        est = result.at_max
        data["curve"] = {
            "points": sorted((p.batch, p.total_bytes) for p in result.search.probes),
            "capacity_bytes": result.capacity_bytes,
            "max_batch": result.max_batch,
        }
    elif kind == "sweep":
        fitting = [e for e in result.estimates if e.fits is not False]
        est = (fitting or result.estimates)[-1] if result.estimates else None
        data["curve"] = {
            "points": [(e.workload.batch, e.total_bytes) for e in result.estimates],
            "capacity_bytes": result.capacity_bytes,
            "max_batch": fitting[-1].workload.batch if fitting else None,
        }
    if est is not None:
        data["timeline"] = timeline_data(est)
        data["modules"] = module_bars(est)
    return data


def timeline_data(est: Any, points: int = POINTS) -> dict[str, Any]:
    """The step's allocated bytes by category at sampled events, reserved bytes, phases,
    peak and the blocks live at the samples (see the module docstring)."""
    timeline, alloc = est.timeline, est.allocator
    n = len(timeline.events)
    index = _samples(alloc.allocated, alloc.peak_index, points, timeline.phase_marks)
    present = {b.category for b in timeline.blocks}
    cats = [c for c in Category if c in present]
    stacks: dict[Category, list[int]] = {c: [] for c in cats}
    live: Counter[Category] = Counter()
    sizes = alloc.sizes
    want = iter(index)
    nxt = next(want, None)
    for i, (block_id, sign) in enumerate(timeline.events):
        b = timeline.blocks[block_id]
        live[b.category] += sign * sizes.get(block_id, b.nbytes)
        if i == nxt:
            for c in cats:
                stacks[c].append(live[c])
            nxt = next(want, None)

    shown = [b for b in timeline.blocks if _live_at_sample(b.alloc_at, b.free_at, n, index)]
    omitted = max(len(shown) - MAX_BLOCKS, 0)
    if omitted:
        shown = sorted(shown, key=lambda b: -sizes.get(b.id, b.nbytes))[:MAX_BLOCKS]
        shown.sort(key=lambda b: b.id)
    names: dict[str, int] = {}

    def name(s: str) -> int:
        return names.setdefault(s, len(names))

    blocks = [
        [
            cats.index(b.category),
            name(b.module),
            name(b.op),
            name(b.tensor),
            sizes.get(b.id, b.nbytes),
            b.alloc_at,
            n if b.free_at is None else b.free_at,
        ]
        for b in shown
    ]
    caching = alloc.model != "exact"
    return {
        "events": n,
        "index": index,
        "categories": [c.value for c in cats],
        "stacks": [stacks[c] for c in cats],
        "reserved": [alloc.reserved[i] for i in index] if caching else None,
        "allocator": alloc.model,
        "phases": _phases(timeline.phase_marks),
        "peak": {
            "index": alloc.peak_index,
            "bytes": est.peak_bytes,
            "reserved_bytes": est.reserved_peak_bytes,
            "phase": est.peak_phase,
            "module": est.peak_module,
            "op": est.peak_op,
        },
        "names": list(names),
        "blocks": blocks,
        "omitted": omitted,
    }


def _samples(curve: list[int], peak: int, points: int, marks: list[tuple[int, Phase]]) -> list[int]:
    """Event indices to draw: the highest of each of ``points`` equal buckets, the first and
    last event, the peak and each phase's first event."""
    n = len(curve)
    if n == 0:
        return []
    out = {0, n - 1, max(peak, 0)}
    out.update(min(i, n - 1) for i, _ in marks)
    step = max(1, -(-n // points))
    for start in range(0, n, step):
        bucket = range(start, min(start + step, n))
        out.add(max(bucket, key=curve.__getitem__))
    return sorted(out)


def _live_at_sample(alloc_at: int, free_at: int | None, n: int, index: list[int]) -> bool:
    """Whether a block alive over ``[alloc_at, free_at)`` is alive at some sampled event."""
    i = bisect.bisect_left(index, alloc_at)
    return i < len(index) and index[i] < (n if free_at is None else free_at)


def _phases(marks: list[tuple[int, Phase]]) -> list[list[Any]]:
    """``[start event, phase]`` of each phase run (repeats, as with micro-batches, kept)."""
    out: list[list[Any]] = []
    for start, phase in marks:
        if out and out[-1][0] == start:
            out[-1][1] = phase.value  # an empty phase: the later mark wins
        else:
            out.append([start, phase.value])
    return out


def module_bars(est: Any) -> dict[str, Any]:
    """Parameter bytes and bytes of activations kept for backward (alive when backward
    starts; in inference, at the peak) per module, aggregated to the deepest module depth
    that gives at most :data:`MODULE_GROUPS` rows."""
    timeline, sizes = est.timeline, est.allocator.sizes
    start = timeline.phase_starts.get(Phase.BACKWARD)
    at = start - 1 if start is not None else est.allocator.peak_index
    params: Counter[str] = Counter()
    acts: Counter[str] = Counter()
    for b in timeline.blocks:
        if b.category is Category.PARAMETERS:
            params[b.module] += sizes.get(b.id, b.nbytes)
    for b in timeline.live_at(at) if at >= 0 else []:
        if b.category is Category.ACTIVATIONS:
            acts[b.module] += sizes.get(b.id, b.nbytes)
    paths = set(params) | set(acts)
    depth = 1
    deepest = max((p.count(".") + 1 for p in paths if p), default=1)
    while depth < deepest and len({_prefix(p, depth + 1) for p in paths}) <= MODULE_GROUPS:
        depth += 1
    rows: dict[str, list[int]] = {}
    for counter, col in ((params, 0), (acts, 1)):
        for path, nbytes in counter.items():
            rows.setdefault(_prefix(path, depth), [0, 0])[col] += nbytes
    ordered = sorted(rows.items(), key=lambda kv: -sum(kv[1]))[:MODULE_GROUPS]
    return {
        "depth": depth,
        "kept_at": "backward" if start is not None else "peak",
        "rows": [[path or "<root>", p, a] for path, (p, a) in ordered],
    }


def _prefix(path: str, depth: int) -> str:
    return ".".join(path.split(".")[:depth])


def render_html(result: Any, title: str | None = None) -> str:
    """The whole page for ``result`` (an estimate, fit, sweep or layers report)."""
    data = page_data(result)
    res = data["result"]
    title = title or f"memlens {res['kind']}: {res.get('model', '')}"
    return page(title, data)


def page(title: str, data: dict[str, Any] | None, body: str = "", script: str = "") -> str:
    """An HTML document with the report's style and scripts inlined, ``data`` embedded and
    drawn into ``#report``; ``body`` and ``script`` are added (the UI's form and code)."""
    payload = "null" if data is None else _json_for_script(data)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_escape(title)}</title>
<style>{asset("report.css")}</style>
</head><body>
{body}<main id="report"></main>
<script id="memlens-data" type="application/json">{payload}</script>
<script>{asset("chart.umd.min.js")}</script>
<script>{asset("report.js")}</script>
<script>{script}
if (document.getElementById("memlens-data").textContent !== "null") {{
  MemlensReport.render(document.getElementById("report"),
    JSON.parse(document.getElementById("memlens-data").textContent));
}}
</script>
</body></html>
"""


def write_html(result: Any, path: str | Path) -> Path:
    """Write :func:`render_html` of ``result`` to ``path``; returns the path."""
    out = Path(path)
    out.write_text(render_html(result), encoding="utf-8")
    return out


def _json_for_script(data: dict[str, Any]) -> str:
    """JSON safe inside a ``<script>`` element (no ``</`` can close it)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
