"""Generation (``memlens estimate --generate``): each traced step's peak and what is alive at
it, the terms that dominate (the logits, the attention's query x key term), and the peak over
the generated tokens."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from memlens._generate import GenerationEstimate
from memlens.categories import Category
from memlens.measurement.generation import GenerationMeasurement
from memlens.report._style import titled_table
from memlens.units import fmt_bytes

#: Rows of the steps table: categories, or several summed.
_COLUMNS: tuple[tuple[str, tuple[Category, ...]], ...] = (
    ("weights", (Category.PARAMETERS, Category.BUFFERS)),
    ("kv cache", (Category.KV_CACHE,)),
    ("activations", (Category.ACTIVATIONS,)),
    ("temporaries", (Category.TEMPORARIES,)),
)


def _share(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "-"


def steps_table(est: GenerationEstimate) -> RenderableType:
    """Columns: the traced steps; rows: the peak and what is alive at it."""
    gen = est.generation
    assert gen is not None
    steps = gen.steps
    table = titled_table(
        f"generation: prompt {gen.prompt_len}, {gen.new_tokens} new tokens, batch {gen.batch}, "
        f"{gen.cache_class} ({', '.join(gen.cache_layers)}, {gen.cache_dtype})",
        "at the step's peak",
        *(f"{s.name}>" for s in steps),
    )
    table.add_row("tokens cached before", *(f"{s.cached_tokens:,}" for s in steps))
    table.add_row("tokens fed", *(f"{s.fed_tokens:,}" for s in steps))
    shown = []
    for name, cats in _COLUMNS:
        cells = [sum(s.breakdown.get(c.value, 0) for c in cats) for s in steps]
        shown.append(cells)
        table.add_row(name, *(fmt_bytes(n) for n in cells))
    other = [s.peak_bytes - sum(col[i] for col in shown) for i, s in enumerate(steps)]
    table.add_row("other (inputs, workspaces)", *(fmt_bytes(n) for n in other))
    table.add_row("peak", *(fmt_bytes(s.peak_bytes) for s in steps), style="bold")
    table.add_row("  of which logits", *(fmt_bytes(s.logits_bytes) for s in steps))
    table.add_row("  of which q x k (attention)", *(fmt_bytes(s.quadratic_bytes) for s in steps))
    return table


def dominant_lines(est: GenerationEstimate) -> list[Text]:
    """A line for each step whose logits or query x key term is at least a tenth of what
    the step adds to the weights (the part of the peak that grows with tokens)."""
    gen = est.generation
    assert gen is not None
    lines = []
    for s in gen.steps:
        fixed = s.breakdown.get(Category.PARAMETERS.value, 0) + s.breakdown.get(
            Category.BUFFERS.value, 0
        )
        rise = s.peak_bytes - fixed
        if s.quadratic_bytes and s.quadratic_bytes * 10 >= rise:
            lines.append(
                Text(
                    f"{s.name}: the attention's quadratic term (batch x heads x "
                    f"{s.fed_tokens if s.name == 'prefill' else 'q'} x keys scores, masks) is "
                    f"{fmt_bytes(s.quadratic_bytes)}, {_share(s.quadratic_bytes, rise)} of what "
                    "the step adds to the weights; flash attention or --prefill-chunk removes "
                    "or bounds it",
                    style="yellow",
                )
            )
        if s.logits_bytes and s.logits_bytes * 10 >= rise:
            lines.append(
                Text(
                    f"{s.name}: logits alive at the peak {fmt_bytes(s.logits_bytes)}, "
                    f"{_share(s.logits_bytes, rise)} of what the step adds to the weights",
                    style="yellow",
                )
            )
    return lines


def tokens_table(est: GenerationEstimate) -> RenderableType:
    """The peak of the step producing each listed token (traced or interpolated)."""
    gen = est.generation
    assert gen is not None
    table = titled_table(
        "peak per generated token",
        "token>",
        "cache>",
        "kv_cache>",
        "peak>",
        "",
    )
    for p in gen.tokens:
        table.add_row(
            f"{p.token:,}",
            f"{p.cached_tokens:,}",
            fmt_bytes(p.kv_cache_bytes),
            fmt_bytes(p.peak_bytes),
            "traced" if p.traced else "",
        )
    return table


def measured_table(est: GenerationEstimate, real: GenerationMeasurement) -> RenderableType:
    """The estimate against a real CPU ``generate()``, at the prefill and the last step."""
    gen = est.generation
    assert gen is not None
    table = titled_table(
        "against a real generate() on the CPU", "step", "estimated>", "measured>", "error>"
    )
    last = gen.steps[-1]
    for name, estimated, measured in (
        ("prefill", gen.steps[0].peak_bytes, real.prefill_peak_bytes),
        (last.name, last.peak_bytes, real.last_step_peak_bytes),
    ):
        error = (estimated - measured) / measured if measured else 0.0
        table.add_row(name, fmt_bytes(estimated), fmt_bytes(measured), f"{100 * error:+.2f}%")
    return table


def render_generation(
    est: GenerationEstimate, real: GenerationMeasurement | None = None
) -> RenderableType:
    """The generation section printed under the budget table (and the real run's peaks)."""
    gen = est.generation
    assert gen is not None
    growth = Text(
        f"the KV cache grows {fmt_bytes(gen.kv_growth_per_token)} per generated token and "
        f"sequence; between traced steps the peak is linear in the cache length "
        f"({gen.interpolation})"
    )
    parts: list[RenderableType] = [steps_table(est), *dominant_lines(est), tokens_table(est)]
    parts += [growth, Text(f"method: {gen.method}", style="dim")]
    if real is not None:
        parts.append(measured_table(est, real))
    return Group(*parts)
