"""What `%prov stale` and `%prov graph` show: stale cells and the session's lineage graph."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.identity import notebook_cells
from jupyter_prov4ml.lineage.links import Lineage, StaleCell
from jupyter_prov4ml.records import CellRun
from jupyter_prov4ml.views.escape import html_text


@dataclass(frozen=True)
class SessionLineage:
    """One kernel session's executions, its stale cells, and the notebook's cell positions
    where its file is still there: what `%prov graph`/`stale` and the CLI's `graph`/`stale`
    show, from the kernel's live lineage or one replayed from a (possibly copied) store."""

    runs: Sequence[CellRun]
    stale: Sequence[StaleCell]
    positions: Mapping[str, int] | None

    @classmethod
    def of(
        cls,
        runs: Sequence[CellRun],
        lineage: Lineage | None = None,
        notebook_path: str | None = None,
    ) -> SessionLineage:
        """`lineage`: the kernel's own; replayed from `runs` when not given."""
        known = lineage if lineage is not None else Lineage.replay(runs)
        path = notebook_path or next((r.cell.notebook_path for r in runs), None)
        notebook = notebook_cells(path)
        stale = known.stale_cells(*notebook) if notebook else known.stale_cells()
        return cls(runs, stale, notebook[1] if notebook else None)

    def dot(self, last: int | None = None, full: bool = False) -> str:
        """The lineage graph's DOT (of the last `last` executions if given); consecutive
        cells are folded into blocks beyond `MAX_LINEAGE_NODES` cells unless `full`."""
        runs = self.runs
        if last is not None:
            runs = runs[-last:] if last > 0 else []
        return lineage_dot(runs, self.stale, self.positions, full=full)

    def report(self) -> StaleReport:
        return StaleReport(self.stale)


@dataclass(frozen=True)
class StaleReport:
    """The cells whose last output may no longer hold, each with its reasons."""

    cells: Sequence[StaleCell]

    def _rows(self) -> list[tuple[str, str]]:
        rows = []
        for cell in self.cells:
            where = f"[{cell.execution_count}]" if cell.execution_count is not None else ""
            label = f"cell {cell.cell_id or cell.sha256[:12]} {where}".strip()
            rows.append((label, "; ".join(cell.reasons)))
        return rows

    def __repr__(self) -> str:
        if not self.cells:
            return "no stale cells"
        return "\n".join(f"{label}: {why}" for label, why in self._rows())

    def _repr_html_(self) -> str:
        if not self.cells:
            return "<p>no stale cells</p>"
        body = "".join(
            f"<tr><td>{html_text(label)}</td><td>{html_text(why)}</td></tr>"
            for label, why in self._rows()
        )
        return f"<table class='jp-prov4ml-stale'><tr><th>cell</th><th>why</th></tr>{body}</table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def lineage_dot(
    runs: Sequence[CellRun],
    stale: Sequence[StaleCell] = (),
    positions: Mapping[str, int] | None = None,
    full: bool = False,
) -> str:
    """DOT of a session's lineage: one node per cell (its executions collapsed), in notebook
    order where known, edges labelled with the variables that flowed, stale cells marked.
    Beyond `MAX_LINEAGE_NODES` cells (and unless `full`), runs of consecutive cells become
    one node each, their cells listed in its hover text."""
    from jupyter_prov4ml.views.prov_graph import new_digraph

    key_of: dict[str, str] = {}
    cells: dict[str, list[CellRun]] = {}
    for run in runs:
        key = run.cell.cell_id or run.cell.sha256
        key_of[run.run_id] = key
        cells.setdefault(key, []).append(run)
    first_seen = {key: index for index, key in enumerate(cells)}
    order = list(cells)
    if positions:
        order.sort(key=lambda k: (positions.get(k, len(positions)), first_seen[k]))
    stale_reasons = {cell.cell_id or cell.sha256: cell.reasons for cell in stale}
    if not full and len(order) > MAX_LINEAGE_NODES:
        return _blocks_dot(order, cells, key_of, runs, stale_reasons)
    ids = {key: f"c{index}" for index, key in enumerate(order)}

    graph = new_digraph("lineage", "TB", shape="box", style="rounded,filled")
    for key in order:
        executions = cells[key]
        latest = executions[-1]
        first_line = next((line for line in latest.cell.source.splitlines() if line.strip()), "")
        counts = [str(r.cell.execution_count) for r in executions if r.cell.execution_count]
        shown = ",".join(counts[-4:]) + ("…" if len(counts) > 4 else "")
        label = f"[{shown}] {first_line[:40]}" + (
            f"\n×{len(executions)}" if len(executions) > 1 else ""
        )
        reasons = stale_reasons.get(key)
        tooltip = "stale: " + "; ".join(reasons) if reasons else f"cell {key}"
        graph.node(
            ids[key],
            label,
            tooltip=tooltip,
            fillcolor="#F8C9C4" if reasons else ("#F4D6D6" if latest.status != "ok" else "#DDE6FB"),
            color="#C0392B" if reasons else "#4A76C9",
        )
    # Keep notebook order top to bottom without drawing it.
    for upper, lower in itertools.pairwise(order):
        graph.edge(ids[upper], ids[lower], style="invis", weight="10")
    flows: dict[tuple[str, str], set[str]] = {}
    for run in runs:
        for binder, names in run.informed_by:
            source = key_of.get(binder)
            target = key_of[run.run_id]
            if source is not None and source != target:
                flows.setdefault((source, target), set()).update(names)
    for (source, target), flowed in flows.items():
        label = ", ".join(sorted(flowed)[:4]) + ("…" if len(flowed) > 4 else "")
        graph.edge(ids[source], ids[target], label=label, constraint="false")
    return str(graph.source)


# The lineage graph shown inline has at most this many nodes (`%prov graph --full`: all).
MAX_LINEAGE_NODES = 40


def _first_line(run: CellRun) -> str:
    return next((line for line in run.cell.source.splitlines() if line.strip()), "")


def _blocks_dot(
    order: Sequence[str],
    cells: Mapping[str, Sequence[CellRun]],
    key_of: Mapping[str, str],
    runs: Sequence[CellRun],
    stale_reasons: Mapping[str, Sequence[str]],
) -> str:
    """The lineage of many cells: consecutive cells (in notebook order) folded into at most
    `MAX_LINEAGE_NODES` blocks, stale ones marked, flows between blocks kept."""
    from jupyter_prov4ml.views.graph_groups import TOOLTIP_LINES
    from jupyter_prov4ml.views.prov_graph import new_digraph

    size = -(-len(order) // MAX_LINEAGE_NODES)  # ceiling division
    blocks = [list(order[i : i + size]) for i in range(0, len(order), size)]
    block_of = {key: index for index, block in enumerate(blocks) for key in block}
    graph = new_digraph("lineage", "TB", shape="box", style="rounded,filled")
    graph.attr(size="9.5,200")
    for index, block in enumerate(blocks):
        executions = sum(len(cells[key]) for key in block)
        first, last = block[0], block[-1]
        stale_here = [key for key in block if key in stale_reasons]
        failed = any(cells[key][-1].status != "ok" for key in block)
        label = (
            f"{len(block)} cells, {executions} executions\n"
            f"{_first_line(cells[first][-1])[:36]}\n… {_first_line(cells[last][-1])[:34]}"
        )
        if stale_here:
            label += f"\n{len(stale_here)} stale"
        lines = []
        for key in block:
            counts = [str(r.cell.execution_count) for r in cells[key] if r.cell.execution_count]
            mark = " (stale: " + "; ".join(stale_reasons[key]) + ")" if key in stale_here else ""
            lines.append(f"[{','.join(counts[-3:])}] {_first_line(cells[key][-1])[:60]}{mark}")
        if len(lines) > TOOLTIP_LINES:
            lines = [*lines[: TOOLTIP_LINES - 1], f"… {len(lines) - TOOLTIP_LINES + 1} more"]
        graph.node(
            f"b{index}",
            label,
            tooltip="\n".join(lines),
            fillcolor="#F8C9C4" if stale_here else ("#F4D6D6" if failed else "#DDE6FB"),
            color="#C0392B" if stale_here else "#4A76C9",
        )
    for upper in range(len(blocks) - 1):
        graph.edge(f"b{upper}", f"b{upper + 1}", style="invis", weight="10")
    flows: dict[tuple[int, int], set[str]] = {}
    for run in runs:
        target = block_of[key_of[run.run_id]]
        for binder, names in run.informed_by:
            source_key = key_of.get(binder)
            if source_key is not None and block_of[source_key] != target:
                flows.setdefault((block_of[source_key], target), set()).update(names)
    for (source, target), flowed in flows.items():
        label = ", ".join(sorted(flowed)[:3]) + ("…" if len(flowed) > 3 else "")
        graph.edge(f"b{source}", f"b{target}", label=label, constraint="false")
    return str(graph.source)
