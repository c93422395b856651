"""Runs as rows: the JSON the CLI prints and the table `%prov list` shows."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .store import StoredRun

COLUMNS = ("run_id", "kind", "name", "execution_count", "status", "started_at", "duration_s")


def run_row(stored: StoredRun) -> dict[str, Any]:
    """The stable, documented JSON shape of one run (`jupyter-prov4ml list --json`)."""
    run = stored.run
    return {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "kind": run.kind,
        "name": run.name,
        "cell_sha256": run.cell.sha256,
        "cell_id": run.cell.cell_id,
        "execution_count": run.cell.execution_count,
        "notebook_path": run.cell.notebook_path,
        "status": run.status,
        "error_type": run.error_type,
        "started_at": dt.datetime.fromtimestamp(run.started_at_unix_s, dt.timezone.utc).isoformat(),
        "duration_s": round(run.wall_time_s, 6),
        "cpu_time_s": round(run.cpu_time_s, 6),
        "params": {p.name: p.value for p in run.params},
        "prov_path": str(stored.prov_path) if stored.prov_path else None,
    }


@dataclass(frozen=True)
class RunTable:
    """A list of runs, as HTML in a notebook and as aligned text elsewhere."""

    rows: Sequence[dict[str, Any]]

    def _cells(self, row: dict[str, Any]) -> list[str]:
        out = []
        for column in COLUMNS:
            value = row[column]
            if column == "duration_s":
                out.append(f"{value:.3f}")
            elif column == "started_at":
                out.append(str(value)[:19].replace("T", " "))
            else:
                out.append("" if value is None else str(value))
        return out

    def __repr__(self) -> str:
        if not self.rows:
            return "no runs recorded yet"
        table = [list(COLUMNS)] + [self._cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table
        )

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>no runs recorded yet</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(row)) + "</tr>"
            for row in self.rows
        )
        return f"<table class='jp-prov4ml-runs'><tr>{head}</tr>{body}</table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
