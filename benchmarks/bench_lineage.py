"""Lineage views at session scale: `%prov graph` of 300 executions, and `%prov stale`.

Target (issue 5): `%prov graph` for 300 executions renders in ≤ 2 s (laid out by Graphviz's
`dot`, SVG included). Baseline: rendering an empty graph the same way, in the same run.
"""

from __future__ import annotations

import shutil
import time

from _report import Result, checked, median
from _shell import isolated_shell, load_extension

from jupyter_prov4ml.views.prov_graph import ProvGraph

CELLS = 30
EXECUTIONS = 300
REPEATS = 3


def _session(shell: object) -> None:
    """300 executions of 30 cells that read each other's variables, some re-run out of order."""
    run_cell = shell.run_cell  # type: ignore[attr-defined]
    for execution in range(EXECUTIONS):
        cell = (execution * 7) % CELLS
        source = f"v{cell} = {execution}" + (f" + v{cell - 1}" if cell else "")
        if cell and f"v{cell - 1}" not in shell.user_ns:  # type: ignore[attr-defined]
            source = f"v{cell} = {execution}"
        run_cell(source, store_history=True, cell_id=f"cell-{cell:02d}")


def main() -> list[Result]:
    """Time `%prov graph` and `%prov stale` over a 300-execution session."""
    if shutil.which("dot") is None:
        return []
    with isolated_shell() as shell:
        extension = load_extension(shell)
        _session(shell)
        graph_s, stale_s, empty_s = [], [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            graph = ProvGraph.from_dot(extension.session_lineage().dot())
            graph_s.append(time.perf_counter() - started)
            assert graph.svg is not None and graph.dot.count("->") > CELLS
            started = time.perf_counter()
            extension.session_lineage().report()
            stale_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            ProvGraph.from_dot(extension.session_lineage().dot(last=0))
            empty_s.append(time.perf_counter() - started)
    return [
        checked(
            f"%prov graph, {EXECUTIONS} executions of {CELLS} cells",
            median(graph_s),
            "s",
            median(empty_s),
            2.0,
            target_is_overhead=False,
        ),
        checked("%prov stale, same session", median(stale_s), "s", None, None),
    ]


if __name__ == "__main__":
    from _report import format_table

    print(format_table(main()))
