"""Command-line options derived from the :class:`~memlens.workload.Workload` schema.

:func:`workload_options` gives a command the options of every workload field its API twin
takes (help, flag, allowed values and default all read from the field's metadata), the target
options (``--gpu``, ``--device``, ``--budget``, and the CUDA stack's ``--cuda-version``,
``--eager-module-loading/--lazy-module-loading``, ``--context``) and ``--json``; the command
receives the given values as ``api``, the keywords of its API function. A
:class:`~memlens.WorkloadError` raised while the command runs is reworded with flags
(``--optimizer-impl``, not ``optimizer_impl``).

Nothing here imports torch or the engine.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import Field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from typer.models import OptionInfo

from memlens._errors import MemlensError, UserCodeTimeout, WorkloadError
from memlens.workload import OptionMeta, default, flag, options

Model = Annotated[
    str,
    typer.Argument(
        help="Model name (resnet50, timm/NAME, llama-3-8b), config.json, or file.py:fn."
    ),
]

_JSON_HELP = "Print JSON instead of tables."
Json = Annotated[bool, typer.Option("--json", help=_JSON_HELP)]
_TIMEOUT_HELP = (
    "Stop after SECONDS if the model's code (factory, forward, step) has not returned. "
    "Default: no limit."
)
#: The ``--timeout`` of the running command (seconds), read by :func:`progress`.
_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar("timeout", default=None)
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", min=0.001, help=_TIMEOUT_HELP),
]


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """The ``--timeout`` of a command that declares its own options (``size``)."""
    token = _timeout.set(seconds)
    try:
        yield
    finally:
        _timeout.reset(token)


#: Options of the target device, by parameter name.
_TARGET = {
    "gpu": (
        "--gpu",
        "NAME",
        "Target device from `memlens devices` (e.g. h100-80gb).",
    ),
    "device": ("--device", "KIND", "Device kind when no --gpu is given: cuda or cpu."),
    "budget": ("--budget", "SIZE", "Custom device capacity, e.g. 24GiB or 16GB."),
    "cuda_version": (
        "--cuda-version",
        "X.Y",
        "CUDA runtime of the target, e.g. 12.4 (sets the CUDA context and module loading). "
        "Default: the installed torch's.",
    ),
    "eager_module_loading": (
        "--eager-module-loading/--lazy-module-loading",
        None,
        "CUDA module loading (CUDA_MODULE_LOADING=EAGER or LAZY). Default: "
        "CUDA_MODULE_LOADING, else lazy from CUDA 11.7.",
    ),
    "context": (
        "--context",
        "BYTES",
        "CUDA context size, e.g. 500MiB, replacing the modelled one (measure yours with "
        "torch.cuda.mem_get_info right after torch.cuda.init()).",
    ),
}
TARGET = ("gpu", "device", "budget", "cuda_version", "eager_module_loading", "context")
#: Target options passed on to the API function under their own names.
_STACK = ("cuda_version", "eager_module_loading", "context")
#: Parameters the decorated command receives instead of the generated options.
_GIVEN = ("api", "as_json", "timeout")


def workload_options(
    use: str, *, target: tuple[str, ...] = TARGET, device: str = "cuda"
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add to a typer command the options of API function ``use``: its workload fields, the
    ``target`` options (``device`` is ``--device``'s default) and ``--json``.

    The command declares its own arguments and options as usual plus ``api: dict[str, Any]``
    (the fields given on the command line, and ``device``/``budget``: the keywords of the API
    function) and ``as_json: bool``.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [
            p
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.name not in _GIVEN
        ]
        fields = list(options(use))
        params = [
            *own,
            *(_field_parameter(f, m, t) for f, m, t in fields),
            *(_target_parameter(name, device) for name in target),
            _parameter("as_json", bool, False, typer.Option("--json", help=_JSON_HELP)),
            _parameter(
                "timeout",
                float | None,
                None,
                typer.Option("--timeout", metavar="SECONDS", min=0.001, help=_TIMEOUT_HELP),
            ),
        ]
        clash = {p.name for p in own} & {f.name for f, _, _ in fields}
        assert not clash, f"{command.__name__}: own options shadow workload fields {clash}"
        flags = (
            {f.name: flag(f.name) for f, _, _ in fields}
            | {name: _TARGET[name][0].split("/")[0] for name in target}
            | _own_flags(own)
        )

        @functools.wraps(command)
        def run(**values: Any) -> None:
            api: dict[str, Any] = {}
            for f, m, _ in fields:
                value = values.pop(f.name)
                if value is not None:
                    api[f.name] = m.switch[0 if value else 1] if m.switch else value
            gpu, kind, budget, *stack = (values.pop(name, None) for name in TARGET)
            if target:
                api["device"] = gpu or kind or device
            if budget is not None:
                api["budget"] = budget
            api.update((k, v) for k, v in zip(_STACK, stack, strict=True) if v is not None)
            as_json = values.pop("as_json")
            token = _timeout.set(values.pop("timeout"))
            try:
                command(**values, api=api, as_json=as_json)
            except WorkloadError as e:
                raise MemlensError(reword(e, flags)) from e
            finally:
                _timeout.reset(token)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate


def reword(error: WorkloadError, flags: dict[str, str]) -> str:
    """The error with flags for field names: ``invalid --optimizer-impl 'fused': ...``."""
    name, _, key = error.field.partition(".")
    where = flags.get(name, name) + (f" {key}=" if key else " ")
    value = "" if isinstance(error.value, bool) else repr(error.value)  # a flag: no value
    allowed = re.sub(
        r"\b(" + "|".join(sorted(flags, key=len, reverse=True)) + r")\b",
        lambda m: flags[m.group(1)] if "_" in m.group(1) else m.group(1),
        error.allowed,
    )
    return f"invalid {where}{value}".rstrip() + f": {allowed}"


_PANELS = {
    "step": "Step",
    "precision": "Precision",
    "optimizer": "Optimizer",
    "strategies": "Strategies",
    "data": "Data loading (host memory)",
    "model source": "Model source",
}


def _field_parameter(f: Field[Any], m: OptionMeta, kind: Any) -> inspect.Parameter:
    """A typer option for a workload field: a flag for a bool (or a ``--on/--off`` switch),
    else a string that the field's parser reads."""
    names = (flag(f.name), *((m.short,) if m.short else ()))
    is_flag = kind is bool or m.switch is not None
    help = m.help
    if m.choices and m.switch is None:
        help += " One of: " + ", ".join(m.choices) + ("" if m.choices[-1].endswith(".") else ".")
    value = default(f)
    if m.switch is not None:
        help += f" Default: --{value}."
    elif value not in (None, (), False):
        help += f" Default: {value}."
    info = typer.Option(
        *names,
        help=help,
        metavar=None if is_flag else m.metavar or _metavar(kind, m),
        show_default=False,
        rich_help_panel=_PANELS.get(m.group, m.group.capitalize()),
    )
    return _parameter(f.name, bool | None if is_flag else str | None, None, info)


def _metavar(kind: Any, m: OptionMeta) -> str:
    if m.choices:
        return "NAME"
    return "INT" if kind is int else "TEXT"


def _target_parameter(name: str, device: str) -> inspect.Parameter:
    flag_, metavar, help = _TARGET[name]
    if name == "device":
        help += f" Default: {device}."
    info = typer.Option(
        flag_, help=help, metavar=metavar, show_default=False, rich_help_panel="Target"
    )
    return _parameter(name, (str if metavar else bool) | None, None, info)


def _parameter(name: str, kind: Any, value: Any, info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=Annotated[kind, info]
    )


def _own_flags(params: list[inspect.Parameter]) -> dict[str, str]:
    """Parameter name -> first flag, for the command's own options."""
    out = {}
    for p in params:
        for info in typing.get_args(p.annotation)[1:]:
            if isinstance(info, OptionInfo) and isinstance(info.default, str):
                out[p.name] = info.default.split("/")[0]  # Annotated: the first name
    return out


# -- output -----------------------------------------------------------------------------------


def check_output(path: Path | None, suffixes: tuple[str, ...], flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a suffix not in
    ``suffixes`` or a folder that does not exist."""
    if path is None:
        return
    if path.suffix.lower() not in suffixes:
        raise MemlensError(
            f"{flag} needs a file name ending in {' or '.join(suffixes)}, got {path.name!r}"
        )
    folder = path.expanduser().parent
    if not folder.is_dir():
        raise MemlensError(f"{flag} {path}: the folder {folder} does not exist")
    if path.expanduser().is_dir():
        raise MemlensError(f"{flag} {path} is a folder: give a file name")


def show(*renderables: RenderableType) -> None:
    """Print renderables to stdout, a blank line between them."""
    console = Console()
    for i, renderable in enumerate(renderables):
        if i:
            console.print()
        console.print(renderable)


def print_json(result: Any, *, detail: bool = False, **attached: Any) -> None:
    """Print a result as :func:`memlens.report.json.to_json` writes it (``attached`` results
    under their keyword); plain lists and dicts as they are."""
    if isinstance(result, list | dict):
        data = result
    else:
        from memlens.report.json import to_json

        data = to_json(result, detail=detail, **attached)
    typer.echo(json.dumps(data, indent=2))


@contextmanager
def progress(
    text: str, delay: float = 1.0, *, traces: bool = False, quiet: bool = False
) -> Iterator[None]:
    """Run the block that calls the model's code: a spinner on stderr with ``text`` if it
    takes longer than ``delay`` s, the code's own ``print`` output sent to stderr (stdout is
    the report's, so ``--json`` stays valid JSON), torch's log lines and warnings silenced,
    and the command's ``--timeout`` applied.

    With ``traces`` (a planner's many estimates), each finished trace is shown: in the
    spinner's line on a terminal, else as one line on stderr (none when ``quiet``: ``--json``).
    """
    status = Console(stderr=True).status(text)
    started = threading.Event()
    hook_token = None
    if traces:
        from memlens.plan.tracer import TRACE_HOOK

        hook_token = TRACE_HOOK.set(_trace_feed(status, text, quiet))

    def start() -> None:
        started.set()
        status.start()

    timer = threading.Timer(delay, start)
    timer.daemon = True
    timer.start()
    try:
        with _stdout_to_stderr(), _quiet_torch(), _deadline(_timeout.get(), text):
            yield
    finally:
        timer.cancel()
        if started.is_set():
            status.stop()
        if hook_token is not None:
            from memlens.plan.tracer import TRACE_HOOK

            TRACE_HOOK.reset(hook_token)


def _trace_feed(status: Any, text: str, quiet: bool) -> Callable[..., None]:
    """A tracer hook: the spinner's text on a terminal, one stderr line per trace when
    piped (nothing when ``quiet``)."""
    from memlens.units import fmt_bytes

    console = Console(stderr=True)
    count = 0

    def feed(batch: int, changes: dict[str, Any], est: Any, seconds: float) -> None:
        nonlocal count
        count += 1
        what = f"batch {batch}" + "".join(f", {k}={v}" for k, v in sorted(changes.items()))
        line = f"trace {count}: {what}: {fmt_bytes(est.total_bytes)} ({seconds:.1f} s)"
        if console.is_terminal:
            status.update(f"{text} {line}")
        elif not quiet:
            console.print(line, highlight=False, soft_wrap=True, markup=False)

    return feed


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Standard output to standard error for the block: Python's ``sys.stdout`` and file
    descriptor 1 (what C code and subprocesses write to)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no descriptor 1 or 2 (an embedded interpreter): Python's stream only
        saved = None
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch's loggers and Python warnings off for the block (they would precede the report
    or the one-line error)."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def _deadline(seconds: float | None, doing: str) -> Iterator[None]:
    """Raise :class:`~memlens._errors.UserCodeTimeout` in the block after ``seconds``
    (``SIGALRM``: the main thread of a POSIX process; elsewhere no limit is set)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    if not hasattr(signal, "setitimer"):
        raise MemlensError("--timeout needs a POSIX system (SIGALRM)")

    def expire(signum: int, frame: Any) -> None:
        raise UserCodeTimeout(seconds, doing.rstrip("…"))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
