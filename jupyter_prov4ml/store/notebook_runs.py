"""A saved notebook's cells matched with the executions that produced their outputs, for
`verify` (is it one clean run?) and `annotate` (each cell's figures into its metadata).

The execution that produced a saved output is the one with the cell's id and the execution
count the notebook saved beside the output. A notebook may have been run in several kernel
sessions recorded in one store: the session that produced the most of its saved outputs is
the one its outputs are checked against (the newest, on a tie).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.lineage.clean_run import CleanRunReport, SavedCell, check_clean_run
from jupyter_prov4ml.store.notebook_file import read_notebook, saved_cells, write_notebook

if TYPE_CHECKING:
    from jupyter_prov4ml.records import CellRun
    from jupyter_prov4ml.store.layout import Store

METADATA_KEY = "jupyter_prov4ml"


@dataclass(frozen=True, slots=True)
class NotebookSession:
    """The session whose executions produced most of a notebook's saved outputs."""

    session_id: str | None
    runs: tuple[CellRun, ...]  # every execution of that session
    elsewhere: dict[tuple[str, int], str]  # (cell key, count) → another session holding it


def output_key(cell: SavedCell) -> tuple[str, int] | None:
    """How a cell's saved output names the execution that made it (cell id, else source)."""
    if not cell.code or cell.execution_count is None:
        return None
    return (cell.cell_id or cell.sha256, cell.execution_count)


def notebook_session(store: Store, cells: list[SavedCell]) -> NotebookSession:
    wanted = {found for cell in cells if (found := output_key(cell)) is not None}
    matches: dict[str, set[tuple[str, int]]] = {}
    newest: dict[str, float] = {}
    for run in store.query() if wanted else ():
        if run.execution_count is None:
            continue
        for cell_key in (run.cell_id, run.cell_sha256):
            key = (cell_key or "", run.execution_count)
            if key in wanted:
                matches.setdefault(run.session_id, set()).add(key)
                newest[run.session_id] = max(newest.get(run.session_id, 0.0), run.started_at_unix_s)
    if not matches:
        return NotebookSession(None, (), {})
    best = max(matches, key=lambda session: (len(matches[session]), newest[session]))
    elsewhere: dict[tuple[str, int], str] = {}
    for session in sorted(matches, key=newest.__getitem__):
        if session != best:
            elsewhere.update(dict.fromkeys(matches[session] - matches[best], session))
    runs = tuple(stored.run for stored in store.runs(session_id=best))
    return NotebookSession(best, runs, elsewhere)


def verify_notebook(store: Store, path: Path) -> CleanRunReport:
    """Whether `path`'s saved outputs come from one clean run; NotebookError for a file that
    is not a readable notebook."""
    cells = saved_cells(read_notebook(path))
    session = notebook_session(store, cells)
    return check_clean_run(str(path), cells, session.session_id, session.runs, session.elsewhere)


def cell_figures(run: CellRun) -> dict[str, Any]:
    """What a cell's metadata keeps of the execution that produced its output."""
    figures: dict[str, Any] = {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "kind": run.kind,
        "status": run.status,
        "execution_count": run.cell.execution_count,
        "wall_time_s": _rounded(run.wall_time_s),
        "cpu_time_s": _rounded(run.cpu_time_s),
    }
    rss = run.hardware.get("process_rss_bytes") if run.hardware is not None else None
    if rss is not None and math.isfinite(rss.max):
        figures["peak_rss_bytes"] = int(rss.max)
    if run.kind == "provrun" and run.energy is not None and run.energy.readings:
        figures["energy_j"] = _rounded(run.energy.total_j)
        figures["energy_method"] = run.energy.methods()
        figures["co2_g"] = _rounded(run.energy.co2_g)
        figures["carbon_intensity_g_per_kwh"] = run.energy.carbon_intensity_g_per_kwh
    return figures


def annotate_cells(store: Store, notebook: dict[str, Any]) -> int:
    """Write each code cell's figures under `metadata.jupyter_prov4ml` in `notebook` (in
    memory), from the execution that produced its output from its current source; a cell
    with no such execution loses figures an earlier annotation left. Returns how many cells
    got figures."""
    cells = saved_cells(notebook)
    session = notebook_session(store, cells)
    produced = {
        (run.cell.cell_id or run.cell.sha256, run.cell.execution_count): run
        for run in sorted(session.runs, key=lambda run: run.started_at_unix_s)
    }
    annotated = 0
    for saved, cell in zip(cells, notebook["cells"], strict=True):
        key = output_key(saved)
        run = produced.get(key) if key is not None else None
        metadata = cell.get("metadata")
        if not isinstance(metadata, dict):
            metadata = cell["metadata"] = {}
        if run is None or run.cell.sha256 != saved.sha256:
            metadata.pop(METADATA_KEY, None)
            continue
        metadata[METADATA_KEY] = cell_figures(run)
        annotated += 1
    return annotated


def annotate_notebook(store: Store, path: Path) -> int:
    """`annotate_cells` on the notebook file, replaced atomically; how many cells got
    figures. NotebookError when it cannot be read or written."""
    notebook = read_notebook(path)
    annotated = annotate_cells(store, notebook)
    write_notebook(path, notebook)
    return annotated


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
