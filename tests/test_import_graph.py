"""The package's import graph, read from the source (AST, nothing imported): the engine stays
below the strategies, reports, planner and commands, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ENGINE_MAY_NOT_IMPORT = ("memlens.strategies", "memlens.report", "memlens.plan", "memlens.commands")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "memlens").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, *, top_level_only: bool) -> set[str]:
    """The memlens modules ``name`` imports: ``from pkg import sub`` counts ``pkg.sub`` when it
    is a module, else ``pkg``; ``if TYPE_CHECKING:`` blocks never run and do not count."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit(stmt, top)
                continue
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import) and (top or not top_level_only):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and (top or not top_level_only):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
            if not top_level_only or inner:
                visit(child, inner)

    visit(ast.parse(path.read_text("utf-8")), True)
    return {m for m in found if m == "memlens" or m.startswith("memlens.")}


def _edges(name: str, *, top_level_only: bool) -> set[str]:
    """What importing ``name`` makes Python run: each imported module and the packages above
    it, except the packages above ``name`` itself (already being imported)."""
    own = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    out: set[str] = set()
    for target in _imports(name, top_level_only=top_level_only):
        parts = target.split(".")
        chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        out |= {m for m in chain if m in MODULES and m not in own and m != name}
    return out


def _cycle(top_level_only: bool) -> list[str] | None:
    """One import cycle, or None (depth-first search, white/grey/black)."""
    graph = {m: _edges(m, top_level_only=top_level_only) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := dfs(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (found := dfs(m)):
            return found
    return None


def test_the_graph_reader_sees_known_imports() -> None:
    assert "memlens.engine.recorder" in _imports("memlens.engine.trace", top_level_only=True)
    assert "memlens.targets" in _imports("memlens.engine.rules", top_level_only=True)
    # a submodule imported by name from its package, and a function-level import
    assert "memlens.engine.targets.cpu_conv" in _imports(
        "memlens.engine.targets.emulation", top_level_only=True
    )
    lazy = _imports("memlens._activations", top_level_only=False)
    assert "memlens._pipeline" in lazy
    assert "memlens._pipeline" not in _imports("memlens._activations", top_level_only=True)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("memlens.engine")))
def test_the_engine_imports_no_strategies_reports_planner_or_commands(module: str) -> None:
    bad = {
        m
        for m in _imports(module, top_level_only=False)
        if any(m == p or m.startswith(p + ".") for p in ENGINE_MAY_NOT_IMPORT)
    }
    assert not bad, f"{module} imports {sorted(bad)}"


def test_module_level_imports_have_no_cycle() -> None:
    cycle = _cycle(top_level_only=True)
    assert cycle is None, " -> ".join(cycle or [])


def test_imports_inside_functions_add_no_cycle() -> None:
    cycle = _cycle(top_level_only=False)
    assert cycle is None, " -> ".join(cycle or [])
