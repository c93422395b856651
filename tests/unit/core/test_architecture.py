"""The package's architecture as checks: no import cycles, the layers of DESIGN.md kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[3]


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_inside_the_package() -> None:
    """No two modules import each other, directly or through others, lazy imports inside
    functions included (imports under TYPE_CHECKING are annotations and do not count).
    A package's `__init__` is left out: it imports nothing of its subpackage's modules."""
    graph = grimp.build_graph("jupyter_prov4ml", exclude_type_checking_imports=True)
    modules = {m for m in graph.modules if m != "jupyter_prov4ml"}
    assert _cycles(graph, modules) == []


def test_import_contracts_hold() -> None:
    """`lint-imports` (the contracts in pyproject.toml: layers, capture/hardware kept from
    the store and views, one importer per heavy library) passes on the package as it is."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
