"""Whether a saved notebook's outputs come from one clean top-to-bottom run of its cells.

The check compares the notebook as saved (each code cell's id, source and execution count)
with the executions a kernel session recorded. A cell passes when:

- an execution of this session produced its saved output (same cell id, same execution
  count) from its current source (same SHA-256), and did not fail (unless the cell is tagged
  `raises-exception`, as nbclient allows);
- that execution came after the one of the code cell above it;
- every name it read was bound by an execution of a cell above it that is still in the
  notebook (the records' `informed_by` lineage).

Cells up to the one that loads the extension (`%load_ext jupyter_prov4ml`) ran before
recording began: they are listed as not checked. Blank code cells never run and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.records import CellRun

_LOADS_EXTENSION = re.compile(r"^\s*%(?:re)?load_ext\s+jupyter_prov4ml\b", re.MULTILINE)
_SHOWN_CHARS = 60


@dataclass(frozen=True, slots=True)
class SavedCell:
    """A cell as the notebook file holds it."""

    position: int  # 1-based, counting every cell (markdown too), as the notebook shows them
    cell_id: str | None
    code: bool
    sha256: str
    source: str
    execution_count: int | None
    has_outputs: bool
    tags: tuple[str, ...] = ()

    def describe(self) -> str:
        shown = f" (id {self.cell_id[:_SHOWN_CHARS]!r})" if self.cell_id else ""
        return f"cell {self.position}{shown}"


@dataclass(frozen=True, slots=True)
class CellProblem:
    """Why one cell's saved output is not part of a clean run."""

    position: int
    cell_id: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CleanRunReport:
    """The verdict on one notebook; `problems` in notebook order (the first is reported)."""

    notebook: str
    session_id: str | None
    checked: int
    not_checked: tuple[int, ...]  # positions of cells that ran before recording began
    problems: tuple[CellProblem, ...]

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "clean": self.clean,
            "session_id": self.session_id,
            "cells_checked": self.checked,
            "cells_not_checked": list(self.not_checked),
            "problems": [
                {"position": p.position, "cell_id": p.cell_id, "reasons": list(p.reasons)}
                for p in self.problems
            ],
        }

    def __repr__(self) -> str:
        if self.clean:
            return (
                f"clean: the outputs of {self.checked} code cell(s) of {self.notebook} come "
                f"from one top-to-bottom run of their current source (session {self.session_id})"
            )
        first = self.problems[0]
        shown = f" (id {first.cell_id[:_SHOWN_CHARS]!r})" if first.cell_id else ""
        lines = [f"NOT clean: {self.notebook}", f"cell {first.position}{shown}:"]
        lines += [f"  {reason}" for reason in first.reasons]
        if len(self.problems) > 1:
            lines.append(f"({len(self.problems) - 1} more cell(s) with problems; --json lists all)")
        return "\n".join(lines)


def loads_extension(source: str) -> bool:
    return _LOADS_EXTENSION.search(source) is not None


def check_clean_run(
    notebook: str,
    cells: Sequence[SavedCell],
    session_id: str | None,
    session_runs: Sequence[CellRun],
    elsewhere: Mapping[tuple[str, int], str] | None = None,
) -> CleanRunReport:
    """Check `cells` against the executions of one kernel session (`session_runs`, any
    order); `elsewhere` maps (cell id, execution count) to another session that recorded it."""
    elsewhere = elsewhere or {}
    runs = sorted(session_runs, key=lambda run: (run.started_at_unix_s, run.run_id))
    by_id = {run.run_id: run for run in runs}
    produced: dict[tuple[str, int], CellRun] = {}
    for execution in runs:
        count = execution.cell.execution_count
        if count is not None:
            produced[(execution.cell.cell_id or execution.cell.sha256, count)] = execution
    code = [cell for cell in cells if cell.code]
    setup_end = max((i for i, cell in enumerate(code) if loads_extension(cell.source)), default=-1)
    position_of_id = {cell.cell_id: cell.position for cell in code if cell.cell_id}
    position_of_sha = {cell.sha256: cell.position for cell in code}
    problems: list[CellProblem] = []
    checked = 0
    previous: tuple[SavedCell, CellRun] | None = None
    for cell in code[setup_end + 1 :]:
        if not cell.source.strip():
            continue
        checked += 1
        reasons: list[str] = []
        run: CellRun | None = None
        if cell.execution_count is None:
            reasons.append("it was not run (no execution count saved)")
        else:
            key = (cell.cell_id or cell.sha256, cell.execution_count)
            run = produced.get(key)
            if run is None and key in elsewhere:
                reasons.append(
                    f"its output [{cell.execution_count}] comes from another kernel session "
                    f"({elsewhere[key]})"
                )
            elif run is None:
                reasons.append(
                    f"no execution recorded in the store produced its output "
                    f"[{cell.execution_count}]"
                )
        if run is not None:
            if run.cell.sha256 != cell.sha256:
                reasons.append(
                    f"its source was edited after the execution [{cell.execution_count}] "
                    "that produced its output"
                )
            if run.status != "ok" and "raises-exception" not in cell.tags:
                reasons.append(f"its execution {run.status} ({run.error_type or 'no error'})")
            if previous is not None and _before(run, previous[1]):
                above, above_run = previous
                reasons.append(
                    f"it ran [{_count(run)}] before {above.describe()} above it "
                    f"[{_count(above_run)}]: out of order"
                )
            for binder, names in run.informed_by:
                reason = _read_problem(cell, binder, names, by_id, position_of_id, position_of_sha)
                if reason:
                    reasons.append(reason)
            previous = (cell, run)
        if reasons:
            problems.append(CellProblem(cell.position, cell.cell_id, tuple(reasons)))
    return CleanRunReport(
        notebook,
        session_id,
        checked,
        tuple(cell.position for cell in code[: setup_end + 1]),
        tuple(problems),
    )


def _before(run: CellRun, other: CellRun) -> bool:
    if run.cell.execution_count is not None and other.cell.execution_count is not None:
        return run.cell.execution_count < other.cell.execution_count
    return run.started_at_unix_s < other.started_at_unix_s


def _count(run: CellRun) -> str:
    count = run.cell.execution_count
    return str(count) if count is not None else "?"


def _read_problem(
    cell: SavedCell,
    binder: str,
    names: Sequence[str],
    by_id: Mapping[str, CellRun],
    position_of_id: Mapping[str, int],
    position_of_sha: Mapping[str, int],
) -> str | None:
    """Why reading `names` from execution `binder` breaks a top-to-bottom run, if it does."""
    shown = ", ".join(f"`{name[:_SHOWN_CHARS]}`" for name in names[:5])
    if len(names) > 5:
        shown += f" and {len(names) - 5} more"
    source = by_id.get(binder)
    if source is None:
        return f"it read {shown}, bound by an execution the store does not hold"
    cell_id = source.cell.cell_id
    where = position_of_id.get(cell_id) if cell_id else position_of_sha.get(source.cell.sha256)
    if where is None:
        return (
            f"it read {shown}, bound by a cell no longer in the notebook "
            f"(execution [{_count(source)}])"
        )
    if where == cell.position:
        return f"it read {shown}, bound by an earlier execution of itself: it ran more than once"
    if where > cell.position:
        return f"it read {shown}, bound only by cell {where} below it: out of order"
    return None
