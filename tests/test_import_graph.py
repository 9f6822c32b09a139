"""No import cycles: ``evaluate`` and the pipeline are layered, not tangled.

The check is static (the modules' ``import`` statements, function-level and ``TYPE_CHECKING``
ones included), so a cycle that only bites when one module is imported first, or only in a
type checker, is caught as well. ``from package import name`` counts as importing the package's
``__init__``: a submodule that imports its own package's ``__init__`` closes a cycle, because
the ``__init__`` imports its submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: packages whose modules must form no cycle among themselves and with each other
CHECKED = ("facexai.evaluate", "facexai.pipeline", "facexai.callbacks", "facexai.metrics")


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of facexai (a package is named by its ``__init__``)."""
    found = {}
    for path in (ROOT / "facexai").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """facexai modules that ``path`` imports anywhere (absolute and relative imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in modules and target != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (found := visit(child)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    inside = {name: path for name, path in modules.items() if name.startswith(CHECKED)}
    return {name: _imports(path, name, modules) & set(inside) for name, path in inside.items()}


def test_checked_packages_have_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"pkg": {"pkg.run"}, "pkg.run": {"pkg"}}, ["pkg", "pkg.run", "pkg"]),
    ],
)
def test_the_cycle_search_finds_cycles(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert _cycle(graph) == cycle


def test_the_old_evaluate_modules_would_have_been_a_cycle() -> None:
    """evaluate.py imported evaluate_report lazily and evaluate_report imported evaluate for types."""
    old = {"facexai.evaluate": {"facexai.evaluate_report"}, "facexai.evaluate_report": {"facexai.evaluate"}}
    assert _cycle(old) == ["facexai.evaluate", "facexai.evaluate_report", "facexai.evaluate"]
