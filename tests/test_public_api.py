"""The public API: the exported names, what they resolve to, and packages without logic."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import memlens

SRC = Path(memlens.__file__).parent

#: The public names, pinned: adding or removing one is a decision, made here.
PUBLIC = [
    "ActivationReport",
    "Category",
    "ConfigError",
    "Estimate",
    "FitResult",
    "GenerationEstimate",
    "HeaderError",
    "LayerReport",
    "LayerRow",
    "MeasureError",
    "Measurement",
    "MemlensError",
    "MissingExtraError",
    "Phase",
    "ServePlan",
    "SizeReport",
    "SweepResult",
    "Timeline",
    "TraceError",
    "UnknownDeviceError",
    "UnknownModelError",
    "Workload",
    "WorkloadError",
    "activations",
    "estimate",
    "fit",
    "generate_estimate",
    "layers",
    "measure",
    "serve_plan",
    "size",
    "sweep",
]

PACKAGES = sorted(p.parent for p in SRC.rglob("__init__.py"))


def _dotted(package: Path) -> str:
    return ".".join(("memlens", *package.relative_to(SRC).parts))


def test_all_is_pinned() -> None:
    assert memlens.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves_to_its_module(name: str) -> None:
    value = getattr(memlens, name)
    assert value.__name__ == name
    assert value.__module__ == memlens._EXPORTS[name]


def test_lazy_table_and_type_checking_imports_match_all() -> None:
    assert sorted(memlens._EXPORTS) == sorted(PUBLIC)
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    (block,) = [n for n in tree.body if isinstance(n, ast.If)]
    typed = {a.name: node.module for node in block.body for a in node.names}  # type: ignore[attr-defined]
    assert typed == memlens._EXPORTS
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        memlens.nonexistent  # noqa: B018


@pytest.mark.parametrize("package", PACKAGES, ids=_dotted)
def test_no_public_name_shadows_a_submodule(package: Path) -> None:
    exported = getattr(importlib.import_module(_dotted(package)), "__all__", [])
    submodules = {p.stem for p in package.glob("*.py")} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }
    assert not set(exported) & submodules


def _allowed(node: ast.stmt, root: bool) -> bool:
    """Docstrings, imports and ``__all__``; in the root also ``__version__``, the lazy table,
    its ``TYPE_CHECKING`` imports and the module ``__getattr__``/``__dir__``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return isinstance(node.value.value, str)
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        allowed = {"__all__"} | ({"__version__", "_EXPORTS"} if root else set())
        literal = isinstance(node.value, (ast.List, ast.Tuple, ast.Dict, ast.Constant))
        return bool(names) and names <= allowed and literal
    if root and isinstance(node, ast.If):
        guard = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        return guard and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body)
    if root and isinstance(node, ast.FunctionDef):
        return node.name in ("__getattr__", "__dir__")
    return False


@pytest.mark.parametrize("package", PACKAGES, ids=_dotted)
def test_init_files_hold_no_logic(package: Path) -> None:
    tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    root = package == SRC
    bad = [f"line {n.lineno}: {ast.dump(n)[:60]}" for n in tree.body if not _allowed(n, root)]
    assert bad == []
