"""The examples in the public functions' docstrings run as written (doctest-style: the
``Example usage::`` block is executed, not compared)."""

from __future__ import annotations

import textwrap
from typing import Any

import memlens


def test_estimate_docstring_example_runs() -> None:
    """The ``Example usage::`` block of :func:`memlens.estimate`, run as written."""
    doc = memlens.estimate.__doc__ or ""
    block = doc.split("Example usage::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith(" " * 8):
            break
        lines.append(line)
    code = textwrap.dedent("\n".join(lines))
    assert "memlens.estimate(" in code
    namespace: dict[str, Any] = {}
    exec(compile(code, "memlens.estimate docstring", "exec"), namespace)
    assert isinstance(namespace["est"], memlens.Estimate)
