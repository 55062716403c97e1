"""The model names memlens knows, as a table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from memlens.report._style import titled_table
from memlens.units import fmt_count


def models_table(rows: list[dict[str, Any]]) -> Table:
    """Name, family, source and parameter count (blank where unknown) of each model."""
    table = titled_table(f"{len(rows)} models", "name", "family", "source", "parameters>")
    for r in rows:
        params = r.get("params")
        table.add_row(r["name"], r["family"], r["source"], fmt_count(params) if params else "")
    return table
