"""Runs of kernels that died mid-cell, finalised with status `crashed`.

A live session holds an exclusive `flock` on `sessions/<id>/writer.lock` from its first journal
line until it closes cleanly, when the file is removed. The OS drops the lock when the process
dies, however it dies (SIGKILL, OOM killer, power loss of a remote kernel's host aside), so a
lock file that can be locked belongs to a dead session. Whoever takes it (the next kernel's
writer at start-up, or the CLI) reads that session's journal, turns every run opened and never
closed into a `crashed` run from what was journaled (start, source, parameters, the samples,
metrics and parameters of its progress checkpoints), writes its PROV document and data files,
appends the close lines to the dead session's journal (the lock makes the taker its only
writer), and removes the lock file. Taking the lock again after that finds nothing to do.

Without `fcntl` (Windows) sessions hold no lock and nothing is recovered.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from jupyter_prov4ml.capture.progress import Progress
from jupyter_prov4ml.capture.recorder import make_run
from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import CellRef, CellRun, HardwareSummary, Param, RunKind, SessionInfo
from jupyter_prov4ml.redaction import redact_source
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store, UnsafeStorePath
from jupyter_prov4ml.store.monitor_files import (
    DeathNote,
    MonitorRow,
    read_death_note,
    read_samples,
    samples_path,
)
from jupyter_prov4ml.store.session_lock import LOCK_NAME, SessionLock


@dataclasses.dataclass(frozen=True)
class Recovered:
    """What one recovery pass finalised."""

    runs: tuple[CellRun, ...] = ()
    sessions: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.runs)

    def describe(self) -> str:
        provruns = sum(run.kind == "provrun" for run in self.runs)
        kernels = len(self.sessions)
        return (
            f"recovered {len(self.runs)} run(s) ({provruns} %%provrun) left open by "
            f"{kernels} kernel(s) that died; saved with status 'crashed' (see %prov list)"
        )


def recover_store(store: Store, notices: Notices | None = None) -> Recovered:
    """Finalise the open runs of every dead session of `store`."""
    try:
        entries = list(os.scandir(store.sessions_dir))
    except OSError:
        return Recovered()
    runs: list[CellRun] = []
    sessions: list[str] = []
    told = notices or Notices()
    for entry in entries:
        if not os.path.exists(os.path.join(entry.path, LOCK_NAME)):
            continue  # closed cleanly, already recovered, or alive on a system without fcntl
        if not _inside(store, entry.name):
            told.warn(
                f"recovery-unsafe:{entry.name!r:.40}",
                f"not recovering session folder {entry.name!r:.80}: it is not a session id, "
                f"or leads outside {store.root}",
            )
            continue
        lock = SessionLock.take_if_dead(Path(entry.path))
        if lock is None:
            continue
        try:
            finalised = recover_session(store, entry.name, told)
        finally:
            lock.release(remove=True)
        if finalised:
            runs += finalised
            sessions.append(entry.name)
    return Recovered(tuple(runs), tuple(sessions))


def recover_session(store: Store, session_id: str, notices: Notices) -> list[CellRun]:
    """Close every run a dead session left open (the caller holds its lock)."""
    from jupyter_prov4ml.store.writer import StoreWriter

    state = read_journal(store.journal_path(session_id), with_progress=True)
    if not state.open or state.session is None:
        return []
    if state.session.session_id != session_id:
        # The journal names another session than its folder: writing for it would put files
        # wherever that name leads. A store is untrusted input.
        notices.warn(
            f"recovery-mismatch:{session_id}",
            f"not recovering session {session_id}: its journal names session "
            f"{state.session.session_id!r:.80}",
        )
        return []
    writer = StoreWriter(store, state.session, notices, resumed=True)
    session_dir = store.session_dir(session_id)
    # What the session's monitor process saw (kernel/monitor_process.py), where it ran.
    note = read_death_note(session_dir)
    runs = []
    for run_id, opened in state.open.items():
        progress = state.progress.get(run_id)
        try:
            rows = read_samples(samples_path(session_dir, str(run_id))) if valid_id(run_id) else []
            run, series = _crashed_run(state.session, opened, progress, note, rows)
        except (KeyError, TypeError, ValueError):
            continue  # an open line we cannot read: nothing trustworthy to finalise
        writer.submit_run(run, series)
        runs.append(run)
    if not writer.close():
        raise OSError(f"could not write the recovered runs into {store.root}")
    return runs


def _crashed_run(
    session: SessionInfo,
    opened: dict[str, Any],
    progress: Any,
    note: DeathNote | None = None,
    rows: list[MonitorRow] | None = None,
) -> tuple[CellRun, RunSeries]:
    """The record of a run that never closed, and its series, from what was journaled (and
    what the monitor process saw: its samples after the last checkpoint, the moment the
    kernel was last seen alive, the cause)."""

    started = float(opened["started_at_unix_s"])
    kind: RunKind = "provrun" if opened["kind"] == "provrun" else "cell"
    # The last moment the run is known to have been alive: the monitor's last look at the
    # kernel, else its last checkpoint.
    if progress is None and rows and kind == "provrun":
        progress = Progress()  # killed before its first checkpoint: the monitor's samples
    last_seen = progress.last_seen_unix_s if progress is not None else None
    if note is not None:
        last_seen = max(note.alive_at_unix_s, last_seen or note.alive_at_unix_s)
    ended = max(started, last_seen or started)
    if progress is not None and rows:
        _append_monitor_rows(progress.samples, rows)
    params = [Param(**p) for p in opened.get("params", ())]
    series = RunSeries()
    hardware: HardwareSummary | None = None
    if progress is not None:
        params += progress.params
        samples = progress.samples
        if len(samples):
            hardware = samples.summary(float(opened.get("interval_s") or 0.1))
        series = RunSeries(progress.metrics, samples)
    source = opened.get("source")
    run = make_run(
        str(opened["run_id"]),
        session.session_id,
        kind,
        CellRef(
            sha256=str(opened["cell_sha256"]),
            # written redacted by the writer; redacted again, since the store is untrusted
            source=redact_source(source) if isinstance(source, str) else "",
            cell_id=opened.get("cell_id"),
            execution_count=opened.get("execution_count"),
            notebook_path=opened.get("notebook_path", session.notebook_path),
        ),
        started,
        ended - started,
        progress.cpu_time_s if progress is not None else 0.0,
        "crashed",
        _died_how(note, progress),
        name=opened.get("name"),
        params=tuple(params),
        hardware=hardware,
    )
    return run, series


def _append_monitor_rows(samples: Any, rows: list[MonitorRow]) -> None:
    """The monitor's samples taken after the last journaled one (while the kernel could not
    checkpoint: a C call holding the GIL, or its last seconds), appended in order."""
    elapsed = samples.column("elapsed_s")
    last = elapsed[-1] if elapsed else -1.0
    later = [row.columns for row in rows if row.columns.get("elapsed_s", -1.0) > last]
    if not later:
        return
    names = {name for columns in later for name in columns}
    chunk = {name: [columns.get(name, math.nan) for columns in later] for name in names}
    samples.extend(chunk, 1)


def _died_how(note: DeathNote | None, progress: Any) -> str:
    """`KernelDied`, with the cause the monitor found and the last step logged, where known."""
    told = []
    if note is not None:
        told.append(note.cause)
    metrics = progress.metrics if progress is not None else None
    if metrics is not None:
        last = [
            (series.times_ns[-1], series.steps[-1], series.name)
            for series in metrics.series.values()
            if len(series.times_ns) and len(series.steps)
        ]
        if last:
            _, step, name = max(last)
            told.append(f"last step logged: {step} ({name[:60]})")
    return "KernelDied" + (": " + "; ".join(told) if told else "")


def _inside(store: Store, name: str) -> bool:
    """A session folder whose name is an id and that is really inside the store."""
    if not valid_id(name):
        return False
    try:
        store.resolve(f"sessions/{name}")
    except UnsafeStorePath:
        return False
    return True
