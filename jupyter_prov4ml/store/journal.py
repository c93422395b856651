"""The journal: one JSON line per event (session start, run open, run close), append-only.

It is the store's source of truth for what ran; PROV documents are derived from it, so a
killed kernel leaves provenance that the CLI can still list and export.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_prov4ml.capture.progress import Progress
from jupyter_prov4ml.records import CellRun, SessionInfo
from jupyter_prov4ml.store.codec import (
    CELL_EVENT,
    expand_cell,
    progress_from_dict,
    run_from_dict,
    session_from_dict,
)


@dataclasses.dataclass(frozen=True, slots=True)
class JournalState:
    """What one session's journal says: its session info, closed runs, and runs still open."""

    session: SessionInfo | None
    closed: dict[str, tuple[CellRun, str | None]]
    open: dict[str, dict[str, Any]]
    bad_lines: int
    # run id → the PROV document (relative path) that holds it, for plain cells
    documents: dict[str, str] = dataclasses.field(default_factory=dict)
    # run id → the progress journaled for a run still open (only when asked for)
    progress: dict[str, Progress] = dataclasses.field(default_factory=dict)


# Our longest lines are a closed run's record (1,000 loop steps: ~1 MB) and progress slices.
MAX_LINE_BYTES = 32 * 2**20
_PROGRESS_PREFIX = '{"event":"progress"'


def read_journal(path: Path, with_progress: bool = False) -> JournalState:
    """Parse a journal, skipping lines that are truncated or not ours (counted in bad_lines).

    `with_progress` also puts together the checkpoints of runs that never closed (what a
    killed kernel left); otherwise those lines are skipped unread.
    """
    session: SessionInfo | None = None
    closed: dict[str, tuple[CellRun, str | None]] = {}
    opened: dict[str, dict[str, Any]] = {}
    documents: dict[str, str] = {}
    progress: dict[str, Progress] = {}
    bad = 0
    for line in _lines(path):
        if line.startswith(_PROGRESS_PREFIX) and not with_progress:
            continue
        try:
            entry = json.loads(line)
            event = entry["event"]
            if event == CELL_EVENT:
                if session is None:
                    raise KeyError("a cell line before its session line")
                run = run_from_dict(expand_cell(entry, session.session_id, session.notebook_path))
                closed[run.run_id] = (run, None)
                opened.pop(run.run_id, None)
            elif event == "session":
                session = session_from_dict(entry["session"])
            elif event == "open":
                opened[entry["run_id"]] = entry
            elif event == "progress":
                run_id = entry["run_id"]
                if run_id in opened:
                    progress.setdefault(run_id, Progress()).add(progress_from_dict(entry))
            elif event == "document":
                documents.update(dict.fromkeys(entry["run_ids"], entry["path"]))
            elif event == "close":
                run = run_from_dict(entry["run"])
                closed[run.run_id] = (run, entry.get("prov_path"))
                opened.pop(run.run_id, None)
                progress.pop(run.run_id, None)
        except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
            bad += 1
    return JournalState(session, closed, opened, bad, documents, progress)


def _lines(path: Path) -> Iterator[str]:
    """The journal's lines; one longer than MAX_LINE_BYTES (none of ours is) comes out as an
    empty line, counted as damaged, without ever being held whole in memory."""
    try:
        with path.open("rb") as journal:
            while line := journal.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (rest := journal.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                    yield ""
                    continue
                yield line.decode("utf-8", "replace")
    except OSError:
        return
