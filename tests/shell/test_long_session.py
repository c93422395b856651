"""A long session keeps the extension's state bounded by the distinct cells and names it saw,
not by how many cells ran (the timed figures are in benchmarks/bench_long_session.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from conftest import extension_of, journal_events
from jupyter_prov4ml.lineage.dataflow import _straight_line_flow
from jupyter_prov4ml.store.layout import Store

CELLS = 2_400
CHECKPOINT = 800
VARIABLES = 6  # v0 .. v5, assigned and read in a rotation
# A small notebook: cell id → source; plus an "edit" cell whose source cycles through 3 versions.
NOTEBOOK = {
    "imports": "import math\n",
    "data": "data = list(range(20))\n",
    "helper": "def total(xs):\n    return sum(xs) + offset\n",
    "offset": "offset = 1\n",
    "use": "t = total(data)\nt\n",
    "scratch": "tmp = [math.sqrt(x) for x in data]\nbest = max(tmp)\ndel tmp\n",
    "fails": "ratio = t / (len(data) - len(data))\n",
}
EDITED = ("scale = 2\n", "scale = 3\n", "scale = 4\n")


def session_cells(count: int) -> list[tuple[str, str | None]]:
    """`count` (source, cell id) pairs: notebook cells re-run, an edited cell, a failing cell,
    and console cells (no id) over a rotating set of variables; few distinct sources."""
    cells: list[tuple[str, str | None]] = [(src, cell_id) for cell_id, src in NOTEBOOK.items()]
    cells.append((" = ".join(f"v{i}" for i in range(VARIABLES)) + " = 0\n", None))
    ids = list(NOTEBOOK)
    n = 0
    while len(cells) < count:
        n += 1
        if n % 5 == 0:
            a = n % VARIABLES
            cells.append((f"v{a} = v{(a - 1) % VARIABLES} + len(data)\n", None))
        elif n % 7 == 0:
            # Edited back and forth: each version is derived from the others many times.
            cells.append((EDITED[n // 7 % len(EDITED)], "edit"))
        else:
            cell_id = ids[n % len(ids)]
            cells.append((NOTEBOOK[cell_id], cell_id))
    return cells[:count]


def sizes(extension: Any) -> dict[str, int]:
    """What the extension keeps between cells, as counts of entries."""
    lineage = extension.recorder.lineage
    return {
        "dataflow": len(extension.recorder.dataflow),
        "cells": len(lineage.cells),
        "read links": sum(len(cell.read_from) for cell in lineage.cells.values()),
        "names": len(lineage.last_binder),
        "bound ids": len(lineage._bound_ids),
        "binders": len(lineage._binders),
    }


def cached(sources: set[str]) -> set[str]:
    """The sources the analysis cache keeps: those the straight-line analysis declines."""
    return {source for source in sources if _straight_line_flow(ast.parse(source).body) is None}


def test_state_is_bounded_by_distinct_cells_over_a_long_session(
    loaded: Any, store_dir: Path
) -> None:
    """After 2,400 executions of a few distinct cells: caches and lineage hold one entry per
    distinct source, cell or name (and stop growing once all were seen), binders stay under
    their pruning bound, the writer's queue drains and holds nothing for later (no PROV
    document is built ahead: each cell's is made from its journal line when read)."""
    loaded.InteractiveTB.set_mode("Minimal")  # cheap tracebacks (1 cell in 50 fails), no cell
    extension = extension_of(loaded)
    cells = session_cells(CELLS)
    distinct_sources = len({source for source, _ in cells})
    distinct_cells = len({cell_id or source for source, cell_id in cells})
    names = {"math", "data", "total", "offset", "t", "best", "scale"} | {
        f"v{i}" for i in range(VARIABLES)
    }

    seen = []
    for number, (source, cell_id) in enumerate(cells, start=1):
        loaded.run_cell(source, store_history=True, cell_id=cell_id)
        if number % CHECKPOINT == 0:
            assert extension.writer.flush(timeout_s=30)
            assert extension.writer.pending_count == 0
            seen.append(sizes(extension))
            # The analysis cache holds each distinct source once (but straight-line cells,
            # analysed without it).
            assert seen[-1]["dataflow"] == len(cached({source for source, _ in cells[:number]}))

    assert (
        0 < seen[-1]["dataflow"] == len(cached({source for source, _ in cells})) < distinct_sources
    )
    for counts in seen:
        assert counts["cells"] == distinct_cells
        assert counts["names"] == counts["bound ids"] == len(names)
        assert counts["read links"] <= distinct_cells * len(names)
        assert counts["binders"] <= 2 * (counts["names"] + counts["cells"]) + 64
    steady = [
        {k: v for k, v in counts.items() if k not in ("dataflow", "binders")} for counts in seen
    ]
    assert steady[0] == steady[1] == steady[2]

    assert extension.writer.flush(timeout_s=60)
    assert extension.writer.pending_count == 0
    assert not list(store_dir.glob("sessions/*/*.prov.json"))
    closed = [e["run"]["run_id"] for e in journal_events(store_dir) if e["event"] == "close"]
    assert len(closed) == CELLS
    store = Store(store_dir)
    assert [stored.run.run_id for stored in store.runs()] == closed
    last = store.find(closed[-1]).document()
    assert any(closed[-1] in str(record.identifier) for record in last.get_records())
