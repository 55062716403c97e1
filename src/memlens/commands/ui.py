"""``memlens ui``: a local web page with a form, drawing results as the HTML report does."""

from __future__ import annotations

from typing import Annotated

import typer

Port = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 to serve on.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(port: Port = 8765) -> None:
        """Serve a page on http://127.0.0.1:PORT: a form for an estimate or a fit, the result
        drawn as in the HTML report, and an address that shares the form (needs the ui extra:
        Starlette and uvicorn)."""
        from memlens.ui.app import serve

        typer.echo(f"memlens ui on http://127.0.0.1:{port}/ (Ctrl-C stops it)", err=True)
        serve(port)
