"""Under a parallel layout: the layout line and the table of distinct ranks of an
:class:`~memlens.Estimate` (whose budget table is the worst rank's)."""

from __future__ import annotations

from rich.console import RenderableType

from memlens._results import Estimate
from memlens.report._style import titled_table
from memlens.units import fmt_bytes


def layout_line(est: Estimate) -> str:
    """``layout: dp 64 (fsdp full) x tp 1 x pp 1 x cp 1 = 64 ranks; worst rank 0``."""
    info = est.parallel
    assert info is not None
    lay = info.layout
    dp = f"dp {lay.dp}" + (f" (fsdp {lay.fsdp}, shard {lay.shard})" if lay.fsdp != "none" else "")
    dp += " (ddp)" if lay.ddp else ""
    return (
        f"layout: {dp} x tp {lay.tp} x pp {lay.pp} x cp {lay.cp} = {lay.world_size} ranks; "
        f"the budget above is rank {info.worst_rank}'s. {info.traced}"
    )


def render_ranks(est: Estimate) -> list[RenderableType]:
    """The layout line and one row per distinct rank (empty without a layout)."""
    info = est.parallel
    if info is None:
        return []
    table = titled_table(
        "Ranks (binary units)",
        *("rank", "mesh", "alike>", "allocated>", "collectives>", "device total>", "peak in"),
    )
    for row in info.ranks:
        mesh = ", ".join(f"{k} {v}" for k, v in row.coordinates.items())
        table.add_row(
            str(row.rank),
            mesh,
            str(row.ranks_alike),
            fmt_bytes(row.peak_bytes),
            fmt_bytes(row.breakdown.get("collectives", 0)),
            fmt_bytes(row.total_bytes),
            row.peak_phase,
        )
    return [layout_line(est), table]
