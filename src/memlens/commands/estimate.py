"""``memlens estimate``: the budget table of one step, optionally checked against a real run."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from memlens._errors import ConfigError
from memlens.commands._export import Html, Markdown, export
from memlens.commands._options import Model, print_json, progress, show, workload_options

Compare = Annotated[
    bool, typer.Option("--compare", help="Also run the step for real and show the error.")
]


def register(app: typer.Typer) -> None:
    @app.command()
    @workload_options("estimate")
    def estimate(
        model: Model,
        compare: Compare = False,
        html: Html = None,
        markdown: Markdown = None,
        *,
        api: Any,
        as_json: bool,
    ) -> None:
        """Peak memory of one step, what it is made of, and whether it fits."""
        from memlens._estimate import estimate as run_estimate
        from memlens.report.budget import render_estimate

        with progress(f"estimating {model}…"):
            est = run_estimate(model, **api)
        if _closed_form(est, compare or bool(html or markdown), as_json):
            return
        if est.workload.generate:
            real = None
            if compare:
                from memlens._generate import measure_generation

                with progress(f"running generate() of {model} for real…", delay=0.0):
                    real = measure_generation(model, est)
            if export(est, html, markdown, as_json):
                return
            if as_json:
                print_json(est, measured=real)
            else:
                from memlens.report.generation import render_generation

                show(render_estimate(est), render_generation(est, real))
            return
        measured = None
        if compare:
            from memlens.measurement.compare import compare_with_run

            with progress(f"running {model} for real…", delay=0.0):
                measured = compare_with_run(model, est)
        if export(est, html, markdown, as_json):
            return
        if as_json:
            print_json(est, measured=measured)
        else:
            from memlens.report.distributed import render_ranks

            show(render_estimate(est, measured), *render_ranks(est), *_step_note(est))


def _closed_form(est: Any, traced_only: bool, as_json: bool) -> bool:
    """Show a closed-form answer (:mod:`memlens.analytic`); False for a traced estimate."""
    from memlens.analytic.layout import LayoutEstimate

    if not isinstance(est, LayoutEstimate):
        return False
    if traced_only:
        raise ConfigError(f"--compare, --html and --markdown need a traced step: {est.method}")
    if as_json:
        print_json(est)
    else:
        from memlens.report.layouts import render_layout_estimate

        show(render_layout_estimate(est))
    return True


def _step_note(est: Any) -> list[str]:
    """A line naming the step when it is not the built-in PyTorch loop's: the user's
    function, or the loop preset and what it set."""
    work = est.workload
    if not work.training:
        return []
    if work.step is not None:
        return [f"step: {work.step} (traced as written; phases inferred)"]
    if work.loop == "pytorch" and not (work.zero_grad or work.release_output is not None):
        return []
    implied = ", ".join(f"{k}={v}" for k, v in work.loop_implied.items())
    return [f"loop: {work.loop}" + (f" (implied: {implied})" if implied else "")]
