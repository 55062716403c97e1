"""The HTML report and ``memlens ui`` in a real browser: headless Chromium (the system's
``chromium``, or ``MEMLENS_CHROMIUM``) driven by Playwright for Python. Skipped, with the
reason, where Chromium, Playwright, Starlette or uvicorn is missing. Screenshots are kept in
tests/artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memlens
from memlens.cli import app
from memlens.units import fmt_bytes

CHROMIUM = os.environ.get("MEMLENS_CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
if CHROMIUM is None:
    pytest.skip("no Chromium executable (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytest.importorskip("starlette", reason="Starlette is not installed (the ui extra)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (the ui extra)")

ARTIFACTS = Path(__file__).parent / "artifacts"
#: A torchvision model that traces in about a second.
MODEL, BATCH, GPU = "alexnet", 2, "v100-16gb"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def server():
    from memlens.ui.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(create_app(port), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(5)


def _timeline_peak(page) -> int:
    """The stacked datasets' sum at the drawn peak event, read from the chart itself."""
    return page.evaluate(
        """() => {
        const chart = Chart.getChart(document.querySelector('#timeline canvas'));
        const peak = chart.options.plugins.memlensPhases.timeline.peak.index;
        return chart.data.datasets.filter(d => d.stack === 'allocated')
          .reduce((s, d) => s + d.data.find(p => p.x === peak).y, 0);
    }"""
    )


def test_html_report_opens_offline_and_shows_the_peak(page, tmp_path):
    """The done-when: resnet50 batch 32 on a V100, one file under 2 MB, from file://."""
    out = tmp_path / "r.html"
    args = ["estimate", "resnet50", "--batch", "32", "--gpu", "v100-16gb"]
    run = CliRunner().invoke(app, [*args, "--html", str(out), "--json"])
    assert run.exit_code == 0, run.output
    est = json.loads(run.output)
    assert out.stat().st_size < 2 * 2**20
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_selector("#timeline canvas")
    assert requests == [out.as_uri()]  # nothing else is fetched
    shown = page.locator("#peak-bytes")
    assert int(shown.get_attribute("data-bytes")) == est["peak_bytes"]
    assert shown.inner_text() == fmt_bytes(est["peak_bytes"])
    assert _timeline_peak(page) == est["peak_bytes"]
    legend = page.evaluate(
        "() => Chart.getChart(document.querySelector('#timeline canvas'))"
        ".data.datasets.map(d => d.label)"
    )
    assert {"parameters", "activations", "optimizer state", "reserved"} <= set(legend)
    # hovering the chart lists the live tensors there
    box = page.locator("#timeline canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    assert "live tensors" in page.inner_text("#live")
    assert page.locator("#live table.live tr").count() > 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)


def test_ui_form_runs_an_estimate_and_matches_the_json(browser, page, server):
    expected = memlens.estimate(MODEL, batch=BATCH, device=GPU)
    page.goto(server)
    page.fill("input[name=model]", MODEL)
    page.fill("input[name=batch]", str(BATCH))
    page.select_option("select[name=device]", GPU)
    page.click("#run")
    page.wait_for_selector("#report[data-state=done] #timeline canvas", timeout=60_000)
    assert int(page.get_attribute("#peak-bytes", "data-bytes")) == expected.peak_bytes
    assert page.inner_text("#peak-bytes") == fmt_bytes(expected.peak_bytes)
    assert page.inner_text("#total-bytes") == fmt_bytes(expected.total_bytes)
    assert _timeline_peak(page) == expected.peak_bytes
    rows = page.locator("#budget-table tbody tr").all_inner_texts()
    shown = dict(r.split("\t")[:2] for r in rows)
    for cat, n in expected.budget():
        if n:
            assert shown[cat.value.replace("_", " ")] == fmt_bytes(n)
    assert shown["total"] == fmt_bytes(expected.total_bytes)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
    # the address shares the form: opening it runs the same estimate
    assert f"model={MODEL}" in page.url and f"batch={BATCH}" in page.url
    again = browser.new_page()
    again.goto(page.url)
    again.wait_for_selector("#report[data-state=done] #peak-bytes", timeout=60_000)
    assert int(again.get_attribute("#peak-bytes", "data-bytes")) == expected.peak_bytes
    assert again.input_value("select[name=device]") == GPU
    again.close()


def test_ui_shows_the_clis_error_line(page, server):
    cli = CliRunner().invoke(app, ["estimate", MODEL, "--batch", "0"])
    page.goto(server)
    page.fill("input[name=model]", MODEL)
    page.fill("input[name=batch]", "0")
    page.click("#run")
    page.wait_for_selector("#report[data-state=error]", state="attached")
    assert page.inner_text("#error") == f"error: {cli.exception}"
    assert "--batch" in page.inner_text("#error")
    assert page.locator("#peak-bytes").count() == 0


def test_ui_answers_its_own_address_only(server):
    port = server.rsplit(":", 1)[1].strip("/")
    request = urllib.request.Request(server, headers={"Host": f"evil.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    post = urllib.request.Request(
        server + "api/run", data=b"model=x", headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as simple:
        urllib.request.urlopen(post, timeout=10)  # a cross-site form post is not JSON
    assert simple.value.code == 415
