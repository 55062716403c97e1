"""benchmarks/published.py: every published row is expressed or listed, fast (no traces)."""

from __future__ import annotations

import json
import re
import sys
from importlib import resources
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import published  # type: ignore[import-not-found]  # noqa: E402
from memlens.devices import get_device  # noqa: E402
from memlens.workload import Workload  # noqa: E402

REFERENCE = Path(published.REFERENCE)


def _reference_figures() -> dict[str, list[float]]:
    """The figures of published-gpu.md's tables [A] and [B] (last column of each row)."""
    text = REFERENCE.read_text()
    out: dict[str, list[float]] = {"A": [], "B": []}
    section = None
    for line in text.splitlines():
        m = re.match(r"## \[([A-Z])\]", line)
        if m:
            section = m.group(1)
        elif line.startswith("## "):
            section = None
        if section in out and line.startswith("|") and not line.startswith("|---"):
            last = line.strip("|").split("|")[-1].strip()
            if re.fullmatch(r"[\d.]+", last):
                out[section].append(float(last))
    return out


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference not on this machine")
def test_every_table_row_of_the_reference_is_a_row():
    figures = _reference_figures()
    assert len(figures["A"]) == 9 and len(figures["B"]) == 11
    for group in ("A", "B"):
        ours = [r.published for r in published.ROWS if r.group == group and r.metric != "context"]
        ours = [p for p in ours if p != 2631]  # the weights row is prose, not a table row
        assert sorted(ours) == sorted(figures[group])
    text = REFERENCE.read_text()
    assert "**1343 MiB**" in text and "**2631 MiB**" in text
    for n in ("287,047,680", "666,632,192", "426 MiB"):
        assert n in text


def test_rows_are_unique_and_complete():
    ids = [r.id for r in published.ROWS]
    assert len(ids) == len(set(ids))
    for r in published.ROWS:
        assert r.metric in {"total", "peak", "context", "weights"}
        assert r.unit in {"MiB", "MB"}
        assert r.published > 0 and r.assumptions, r.id
        assert set(r.why) >= set(r.needs), f"{r.id}: a need without its reason"
        if r.metric in {"total", "peak", "weights"}:
            assert r.model is not None
        if r.share_of:
            assert r.share_of in ids
        get_device(r.device) if r.device != "cuda" else None


def test_every_row_maps_to_options_or_says_what_is_missing():
    """Each row's options are valid workload fields now; each need is either used or
    reported missing, never dropped."""
    available = published.available_options()
    fields = set(Workload.__dataclass_fields__)
    for r in published.ROWS:
        assert set(r.options) <= fields, r.id
        kwargs, missing = published.plan(r, available)
        used = set(kwargs) - set(r.options)
        assert used | {m[0] for m in missing} == set(r.needs), r.id
        Workload.from_fields({k: v for k, v in kwargs.items() if k in fields})


def test_a_missing_option_is_reported_not_silent():
    row = published.ROWS_A[2]
    kwargs, missing = published.plan(row, {k: None for k in row.options})
    assert {m[0] for m in missing} == set(row.needs)
    assert not set(row.needs) & set(kwargs)


def test_not_expressed_rows_say_why():
    assert published.NOT_EXPRESSED
    for n in published.NOT_EXPRESSED:
        assert n["why"] and n["figure"]


def test_probe_segments_follow_the_caching_allocator():
    assert published.probe_reserved_bytes(4) == 2 * 2**20  # small pool
    assert published.probe_reserved_bytes(6_400_000) == 20 * 2**20  # kLargeBuffer
    assert published.probe_reserved_bytes(None) == 0


def test_opt_350m_config_builds_with_the_published_parameter_count():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    doc = json.loads(
        (resources.files("memlens") / "data" / "configs" / "opt-350m.json").read_text()
    )
    assert doc["_memlens"]["params"] == 331_196_416
    config = transformers.OPTConfig(**{k: v for k, v in doc.items() if k != "_memlens"})
    with torch.device("meta"):
        model = transformers.OPTForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == 331_196_416


def test_l40s_is_in_the_catalog():
    d = get_device("NVIDIA L40S")
    assert d.capacity_bytes == 46068 * 2**20 and d.arch == "sm89" and d.capacity_reported


def test_the_measured_opt_eager_attention_computes_what_todays_does():
    """The 4.46 eager attention the [B] rows trace: same values as the installed code, plus
    the clamp (aten.maximum) whose saved input is the memory difference."""
    torch = pytest.importorskip("torch")
    modeling_opt = pytest.importorskip("transformers.models.opt.modeling_opt")
    module = torch.nn.Module().eval()
    q, k, v = (torch.randn(2, 4, 8, 16) for _ in range(3))
    mask = torch.triu(torch.full((8, 8), torch.finfo(torch.float32).min), 1)[None, None]
    ours, _ = published.opt_eager_attention_tf446(module, q, k, v, mask, 1.0)
    today, _ = modeling_opt.eager_attention_forward(module, q, k, v, mask, 1.0)
    torch.testing.assert_close(ours, today)
    row = next(r for r in published.ROWS if r.id == "B7")
    with published.measured_model_code(row):
        assert modeling_opt.eager_attention_forward is published.opt_eager_attention_tf446
    assert modeling_opt.eager_attention_forward is not published.opt_eager_attention_tf446
