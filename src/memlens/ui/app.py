"""``memlens ui``: a local web page with a form whose results are drawn as the HTML report is.

A Starlette application (the ``ui`` extra: Starlette and uvicorn, imported only here):

- ``GET /``: the form and an empty report. The form's fields are the
  :class:`~memlens.workload.Workload` options of the groups in :data:`GROUPS` that
  ``estimate`` takes, read from their :class:`~memlens.workload.OptionMeta` (flag, help,
  choices, default), so the page cannot drift from the CLI. The page's address carries the
  form (``/?model=resnet18&batch=8&device=a100-40gb``): opening it fills the form and runs it.
- ``GET /api/models``: model names for the model field's completion (``memlens models``).
- ``POST /api/run``: the form as JSON; starts the estimate (or fit) in a worker thread and
  answers ``{"job": id}`` at once, so the page stays responsive.
- ``GET /api/jobs/{id}``: ``running`` with the seconds elapsed and what it is doing, ``done``
  with :func:`memlens.report.html.page_data` of the result, or ``error`` with the one line
  the CLI would print (workload errors name the flag: ``invalid --batch 'x': ...``).

Traces run one at a time (a trace installs process-wide dispatch modes). The server binds
127.0.0.1 only, answers only requests addressed to that host (no DNS rebinding) and refuses
model specs that name Python code (``file.py:fn``), which a page from elsewhere could post.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import escape
from typing import Any

from memlens._errors import MemlensError, WorkloadError
from memlens.workload import OptionMeta, default, flag, options

#: Option groups of the form (the step, its precision, optimizer and strategies).
GROUPS = ("step", "precision", "optimizer", "strategies")
#: Options left out of the form: a user step names Python code.
EXCLUDED = ("step",)
#: What the form can run: the API functions whose result the report draws.
COMMANDS = ("estimate", "fit")
#: Jobs kept (with their results) for the pages that poll them.
KEEP_JOBS = 32


@dataclass(frozen=True)
class FormField:
    """One input of the form, from a workload field's metadata."""

    name: str
    flag: str
    help: str
    kind: str  # "select", "bool" or "text"
    choices: tuple[str, ...]
    default: Any


def form_fields() -> list[FormField]:
    """The form's fields, in schema order."""
    out = []
    for f, m, kind in options("estimate"):
        if m.group not in GROUPS or f.name in EXCLUDED:
            continue
        out.append(_field(f.name, m, kind, default(f)))
    return out


def _field(name: str, m: OptionMeta, kind: Any, value: Any) -> FormField:
    if m.switch is not None:
        return FormField(name, flag(name).split("/")[0], m.help, "select", m.switch, value)
    if kind is bool:
        return FormField(name, flag(name), m.help, "bool", (), bool(value))
    fixed = m.choices and not any(":" in c for c in m.choices)  # every-k:K takes a value
    value = "" if value in (None, ()) else value
    return FormField(name, flag(name), m.help, "select" if fixed else "text", m.choices, value)


def form_html() -> str:
    """The form: model, command, device, then every :func:`form_fields` input."""
    from memlens.devices import list_devices

    devices = ["cuda", "cpu", *(d.name for d in list_devices() if d.kind in ("cuda", "rocm"))]
    inputs = [
        '<label title="A name from memlens models, or a config.json">model'
        '<input name="model" list="models" required autocomplete="off" value="resnet18">'
        '<datalist id="models"></datalist></label>',
        _select("command", "what to run", COMMANDS, "estimate"),
        _select("device", "target device (memlens devices)", devices, "cuda"),
        '<label title="Custom capacity, e.g. 24GiB">budget<input name="budget" value=""></label>',
    ]
    for f in form_fields():
        if f.kind == "select":
            choices = f.choices if f.default not in ("", None) else ("", *f.choices)
            inputs.append(_select(f.name, f.help, choices, f.default))
        elif f.kind == "bool":
            checked = " checked" if f.default else ""
            inputs.append(
                f'<label title="{escape(f.help)}">{f.name}'
                f'<input type="checkbox" name="{f.name}"{checked}></label>'
            )
        else:
            hint = f' placeholder="{escape(", ".join(f.choices))}"' if f.choices else ""
            inputs.append(
                f'<label title="{escape(f.help)}">{f.name}'
                f'<input name="{f.name}" value="{escape(str(f.default))}"{hint}></label>'
            )
    return (
        '<h1>memlens</h1><form class="ui" id="form">'
        + "".join(inputs)
        + '<div class="actions"><button type="submit" id="run">Estimate</button>'
        '<span class="status" id="status"></span><span class="error" id="error"></span>'
        "</div></form>"
    )


def _select(name: str, help: str, choices: tuple[str, ...] | list[str], value: Any) -> str:
    opts = "".join(
        f'<option value="{escape(c)}"{" selected" if c == value else ""}>{escape(c) or "—"}'
        "</option>"
        for c in choices
    )
    return f'<label title="{escape(help)}">{name}<select name="{name}">{opts}</select></label>'


# -- running ----------------------------------------------------------------------------------


@dataclass
class Job:
    """One run of the form: its state, what it is doing and its answer."""

    what: str
    started: float = field(default_factory=time.monotonic)
    state: str = "running"  # running, done, error
    data: dict[str, Any] | None = None
    error: str = ""
    ended: float | None = None
    tracer: Any = None  # a fit's Tracer: how many traces it has run

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "what": self.what}
        out["elapsed"] = round((self.ended or time.monotonic()) - self.started, 1)
        if self.tracer is not None:
            out["traces"] = self.tracer.count
        if self.state == "done":
            out["data"] = self.data
        elif self.state == "error":
            out["error"] = self.error
        return out


class Runner:
    """Jobs by id, run one at a time on a worker thread."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memlens-ui")
        self._lock = threading.Lock()

    def submit(self, form: dict[str, Any]) -> str:
        model = str(form.get("model", "")).strip()
        job = Job(what=f"{form.get('command', 'estimate')} {model}")
        with self._lock:
            job_id = str(next(self._ids))
            self.jobs[job_id] = job
            for old in list(self.jobs)[:-KEEP_JOBS]:  # finished results are not kept forever
                if self.jobs[old].state != "running":
                    del self.jobs[old]
        self._pool.submit(self._run, job, form)
        return job_id

    def _run(self, job: Job, form: dict[str, Any]) -> None:
        job.started = time.monotonic()  # queued time is not the trace's
        try:
            job.data = run_form(form, job)
        except Exception as e:  # every error becomes the CLI's one line
            job.error = "error: " + one_line(e)
        job.ended = time.monotonic()
        job.state = "error" if job.error else "done"  # last: pollers read the rest after it

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def one_line(e: BaseException) -> str:
    """The line ``memlens`` prints for an error (workload errors name the flag)."""
    if isinstance(e, WorkloadError):
        from memlens.commands._options import reword

        flags = {f.name: f.flag for f in form_fields()} | {"batch": "--batch"}
        return reword(e, flags)
    if isinstance(e, MemlensError):
        return str(e)
    what = str(e).splitlines()[0][:300] if str(e) else ""
    return f"unexpected {type(e).__name__}: {what}"


def run_form(form: dict[str, Any], job: Job | None = None) -> dict[str, Any]:
    """Run what the form asks and return the page's data; bad input raises the error the
    CLI would. ``job`` gets a fit's tracer (its trace count is the progress shown)."""
    from memlens.report.html import page_data

    model = str(form.get("model", "")).strip()
    if not model:
        raise MemlensError("give a model name (memlens models lists them)")
    if ":" in model or model.endswith(".py"):
        raise MemlensError(
            f"the page runs model names and config files only, not code ({model!r}): use "
            "the command line for file.py:fn"
        )
    command = form.get("command") or "estimate"
    if command not in COMMANDS:
        raise MemlensError(f"invalid command {command!r}: one of {', '.join(COMMANDS)}")
    fields: dict[str, Any] = {}
    for f in form_fields():
        value = form.get(f.name)
        if f.kind == "bool":
            if value not in (None, "", False) and value != f.default:
                fields[f.name] = value in (True, "on", "true", "1")
        elif value not in (None, "") and str(value) != str(f.default):
            fields[f.name] = str(value)
    device = str(form.get("device") or "cuda")
    budget = str(form.get("budget") or "") or None
    if command == "fit":  # as memlens.fit does, keeping the tracer to count its traces
        from memlens.plan import plan_fit
        from memlens.plan.tracer import Tracer

        batch = fields.pop("batch", None)
        target = _batch_field().parse("batch", batch) if batch else None
        tracer = Tracer(model, None, "fit", fields, device=device, budget=budget)
        if job is not None:
            job.tracer = tracer
        result = plan_fit(tracer, batch=target)
    else:
        from memlens._estimate import estimate

        result = estimate(model, device=device, budget=budget, **fields)
    return page_data(result)


def _batch_field() -> OptionMeta:
    """The batch option's metadata (fit's target batch is read by its parser)."""
    return next(m for f, m, _ in options() if f.name == "batch")


# -- the application --------------------------------------------------------------------------


def create_app(port: int) -> Any:
    """The Starlette application for a server on 127.0.0.1:``port``."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
        from starlette.routing import Route
    except ImportError as e:
        raise MemlensError(
            "memlens ui needs Starlette and uvicorn: pip install 'memlens[ui]'"
        ) from e
    from starlette.concurrency import run_in_threadpool

    from memlens.report.html import asset, page

    runner = Runner()
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    script = asset("ui.js")
    models: list[str] = []

    def load_models() -> None:
        from memlens.sources.catalog import list_models

        models.extend(r["name"] for r in list_models())

    threading.Thread(target=load_models, daemon=True).start()
    html = page("memlens", None, body=form_html(), script=script)

    def guard(request: Request) -> PlainTextResponse | None:
        if request.headers.get("host") not in hosts:
            return PlainTextResponse("memlens ui answers 127.0.0.1 only", status_code=403)
        return None

    async def index(request: Request) -> Any:
        return guard(request) or HTMLResponse(html)

    async def model_names(request: Request) -> Any:
        return guard(request) or JSONResponse(models)

    async def run(request: Request) -> Any:
        refused = guard(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return PlainTextResponse("send the form as application/json", status_code=415)
        form = await request.json()
        if not isinstance(form, dict):
            return PlainTextResponse("the form is a JSON object", status_code=400)
        job_id = await run_in_threadpool(runner.submit, form)
        return JSONResponse({"job": job_id})

    async def job(request: Request) -> Any:
        refused = guard(request)
        if refused is not None:
            return refused
        found = runner.jobs.get(request.path_params["job_id"])
        if found is None:
            return JSONResponse({"state": "error", "error": "error: no such job"}, 404)
        return JSONResponse(found.status())

    routes = [
        Route("/", index),
        Route("/api/models", model_names),
        Route("/api/run", run, methods=["POST"]),
        Route("/api/jobs/{job_id}", job),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        runner.shutdown()

    return Starlette(routes=routes, lifespan=lifespan)


def serve(port: int) -> None:
    """Serve the page on http://127.0.0.1:``port`` until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise MemlensError(
            "memlens ui needs Starlette and uvicorn: pip install 'memlens[ui]'"
        ) from e
    app = create_app(port)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
