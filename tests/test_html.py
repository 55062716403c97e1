"""The HTML report's data and page, the Markdown summary, ``--html``/``--markdown``, and the UI's
form and errors (no browser: tests/test_ui_browser.py drives the pages in Chromium)."""

from __future__ import annotations

import json
import re
import sys

import pytest
from typer.testing import CliRunner

import memlens
from memlens._errors import MemlensError
from memlens.categories import Category
from memlens.report.html import _samples, page_data, render_html
from memlens.report.markdown import to_html_fragment, to_markdown
from memlens.units import fmt_bytes
from memlens.workload import options

from conftest import small_cnn

CNN = {"input_shape": (3, 32, 32), "optimizer": "adam"}


@pytest.fixture(scope="module")
def est():
    return memlens.estimate(small_cnn, batch=4, device="v100-16gb", **CNN)


def test_timeline_stacks_sum_to_the_allocated_curve_and_keep_the_peak(est):
    tl = page_data(est)["timeline"]
    allocated = est.allocator.allocated
    assert tl["events"] == len(allocated)
    for k, i in enumerate(tl["index"]):
        assert sum(stack[k] for stack in tl["stacks"]) == allocated[i]
    k = tl["index"].index(est.allocator.peak_index)
    assert sum(stack[k] for stack in tl["stacks"]) == tl["peak"]["bytes"] == est.peak_bytes
    assert tl["reserved"][k] <= est.reserved_peak_bytes
    assert tl["reserved"] == [est.allocator.reserved[i] for i in tl["index"]]  # CUDA: reserved
    assert tl["peak"]["module"] == est.peak_module and tl["peak"]["op"] == est.peak_op
    assert [p for _, p in tl["phases"]] == ["forward", "loss", "backward", "optimizer"]
    # the hover's blocks alive at the peak are exactly what is allocated there
    live = [b for b in tl["blocks"] if b[5] <= est.allocator.peak_index < b[6]]
    assert sum(b[4] for b in live) == est.peak_bytes
    assert any(tl["names"][b[3]].startswith("float32[4, 16, 32, 32]") for b in tl["blocks"])


def test_module_bars_hold_every_parameter_byte(est):
    bars = page_data(est)["modules"]
    assert sum(r[1] for r in bars["rows"]) == est.breakdown[Category.PARAMETERS.value]
    assert {r[0] for r in bars["rows"]} <= {str(i) for i in range(9)} | {"<root>"}
    assert bars["kept_at"] == "backward" and any(r[2] > 0 for r in bars["rows"])


def test_hover_lists_the_largest_blocks_when_there_are_too_many(est, monkeypatch):
    from memlens.report import html

    full = html.timeline_data(est)["blocks"]
    monkeypatch.setattr(html, "MAX_BLOCKS", 10)
    tl = html.timeline_data(est)
    assert len(tl["blocks"]) == 10 and tl["omitted"] == len(full) - 10
    assert sorted(b[4] for b in tl["blocks"]) == sorted(b[4] for b in full)[-10:]


def test_samples_take_each_buckets_highest_point_and_the_peak():
    curve = [0, 5, 1, 9, 2, 3, 8, 4] * 1000
    index = _samples(curve, 3, 100, [])
    assert len(index) <= 100 + 3 and index == sorted(set(index))
    assert 3 in index and max(curve[i] for i in index) == 9
    assert _samples([], -1, 10, []) == []


def test_page_is_self_contained(est):
    page = render_html(est)
    assert "sourceMappingURL" not in page
    assert not re.search(r"""<(script|link|img|iframe)[^>]*\s(src|href)=["']?(https?:)?//""", page)
    assert "Chart.js v4" in page  # inlined
    data = _embedded(page)
    assert data["result"]["peak_bytes"] == est.peak_bytes
    assert data["version"] == memlens.__version__


def test_json_in_the_page_cannot_close_its_script():
    from memlens.report.html import _json_for_script

    text = _json_for_script({"module": "</script><script>alert(1)</script>"})
    assert "</" not in text and json.loads(text)["module"].startswith("</script>")


def test_markdown_budget_table(est):
    md = to_markdown(est)
    head, _, rest = md.partition("\n\n")
    assert f"`{est.model}`" in head and "**fits**" in head
    rows = [line for line in rest.splitlines() if line.startswith("| ")][2:]
    assert rows[-1] == f"| **total** | **{fmt_bytes(est.total_bytes)}** | **100.0%** |"
    shown = {r.split(" | ")[0][2:]: r.split(" | ")[1] for r in rows[:-1]}
    assert shown == {c.value.replace("_", " "): fmt_bytes(n) for c, n in est.budget() if n}
    html = to_html_fragment(est)
    assert html == est._repr_html_() and "<script" not in html
    assert f'<th style="text-align:right">{fmt_bytes(est.total_bytes)}</th>' in html


def test_fit_and_sweep_have_a_batch_curve():
    budget = {"device": "cpu", "budget": "8MiB"}
    fit = memlens.fit(small_cnn, strategies=False, max_batch=64, **budget, **CNN)
    data = page_data(fit)
    assert data["curve"]["max_batch"] == fit.max_batch
    assert (fit.max_batch, fit.at_max.total_bytes) in map(tuple, data["curve"]["points"])
    assert data["timeline"]["peak"]["bytes"] == fit.at_max.peak_bytes
    assert "largest batch that fits **" + str(fit.max_batch) + "**" in to_markdown(fit)
    sweep = memlens.sweep(small_cnn, batches=[1, 2], **budget, **CNN)
    curve = page_data(sweep)["curve"]
    expected = [(e.workload.batch, e.total_bytes) for e in sweep.estimates]
    assert (
        [tuple(p) for p in curve["points"]]
        == expected
        == [
            (1, sweep.estimates[0].total_bytes),
            (2, sweep.estimates[1].total_bytes),
        ]
    )
    assert "<table>" in sweep._repr_html_()


def test_cli_markdown_to_stdout_and_html_file(tmp_path):
    from memlens.cli import app

    spec = "tests/conftest.py:small_cnn"
    args = ["estimate", spec, "--batch", "2", "--input-shape", "3x32x32", "--gpu", "v100-16gb"]
    out = CliRunner().invoke(app, [*args, "--markdown", "-", "--html", str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("**memlens estimate**") and "| **total** |" in out.output
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    both = CliRunner().invoke(app, [*args, "--markdown", "-", "--json"])
    assert isinstance(both.exception, MemlensError) and "give one" in str(both.exception)


def test_ui_form_is_the_schema():
    from memlens.ui.app import GROUPS, form_fields

    fields = {f.name: f for f in form_fields()}
    expected = [f.name for f, m, _ in options("estimate") if m.group in GROUPS and f.name != "step"]
    assert list(fields) == expected
    assert fields["precision"].kind == "select"
    assert fields["precision"].choices == next(
        m.choices for f, m, _ in options() if f.name == "precision"
    )
    assert fields["mode"].choices == ("train", "inference") and fields["checkpoint"].kind == "text"
    assert fields["offload_optimizer"].kind == "bool"


def test_ui_errors_are_the_clis_line():
    from memlens.cli import app
    from memlens.ui.app import one_line, run_form

    cli = CliRunner().invoke(app, ["estimate", "alexnet", "--batch", "zero"])
    with pytest.raises(MemlensError) as ui:
        run_form({"model": "alexnet", "batch": "zero"})
    assert (
        one_line(ui.value)
        == str(cli.exception)
        == ("invalid --batch 'zero': must be a positive integer")
    )
    with pytest.raises(MemlensError) as fit:
        run_form({"model": "alexnet", "command": "fit", "batch": "zero"})
    assert one_line(fit.value) == one_line(ui.value)
    with pytest.raises(MemlensError, match="not code"):
        run_form({"model": "tests/conftest.py:small_cnn"})


def test_serve_plan_report_and_markdown(tmp_path):
    from memlens.cli import app

    out = tmp_path / "s.html"
    args = ["serve-plan", "llama-3-8b", "--gpu", "a100-80gb", "--html", str(out), "--markdown", "-"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    plan = memlens.serve_plan("llama-3-8b", gpu="a100-80gb")
    assert f"| cache blocks | {plan.num_blocks:,} |" in run.output
    assert f"| = KV cache memory | {fmt_bytes(plan.kv_available_bytes)} |" in run.output
    data = json.loads(
        re.search(r'type="application/json">(.*?)</script>', out.read_text()).group(1)
    )
    assert data["result"]["kind"] == "serve-plan"
    assert data["result"]["num_blocks"] == plan.num_blocks


def _embedded(page: str) -> dict:
    """The data a page embeds."""
    return json.loads(re.search(r'type="application/json">(.*?)</script>', page, re.S).group(1))


def test_ui_without_its_extra_says_how_to_get_it(monkeypatch):
    from memlens.ui.app import create_app, serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MemlensError, match=r"pip install 'memlens\[ui\]'"):
        serve(8765)
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(MemlensError, match=r"pip install 'memlens\[ui\]'"):
        create_app(8765)
