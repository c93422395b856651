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

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import IO, Any

from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import CellRef, CellRun, HardwareSummary, Param, RunKind, SessionInfo
from jupyter_prov4ml.redaction import redact_source
from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store, make_private_dirs, open_store_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "writer.lock"


class SessionLock:
    """An exclusive lock on a session folder's lock file (held open until released)."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def hold(cls, session_dir: Path, modes: StoreModes = PRIVATE) -> SessionLock | None:
        """Create and lock the lock file of a session that is starting (None without fcntl).
        Raises OSError when the store cannot be written."""
        if fcntl is None:
            return None
        make_private_dirs(session_dir, modes)
        path = session_dir / LOCK_NAME
        while True:
            handle = os.fdopen(open_store_file(path, os.O_RDWR, modes), "r+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # A recoverer may have removed the file between our open and our lock: lock the
            # file that is there now, or nobody could tell this session is alive.
            if _same_file(handle, path):
                return cls(path, handle)
            handle.close()

    @classmethod
    def take_if_dead(cls, session_dir: Path) -> SessionLock | None:
        """The lock of a session whose kernel is gone; None while it lives (or was closed)."""
        if fcntl is None:
            return None
        path = session_dir / LOCK_NAME
        try:
            handle = os.fdopen(os.open(path, os.O_RDWR), "r+b")
        except OSError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        if not _same_file(handle, path):
            handle.close()
            return None
        return cls(path, handle)

    def release(self, remove: bool) -> None:
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._handle.close()


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


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
    for entry in entries:
        if not os.path.exists(os.path.join(entry.path, LOCK_NAME)):
            continue  # closed cleanly, already recovered, or alive on a system without fcntl
        lock = SessionLock.take_if_dead(Path(entry.path))
        if lock is None:
            continue
        try:
            finalised = recover_session(store, entry.name, notices or Notices())
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
    writer = StoreWriter(store, state.session, notices, resumed=True)
    runs = []
    for run_id, opened in state.open.items():
        progress = state.progress.get(run_id)
        try:
            run, series = _crashed_run(state.session, opened, progress)
        except (KeyError, TypeError, ValueError):
            continue  # an open line we cannot read: nothing trustworthy to finalise
        writer.submit_run(run, series)
        runs.append(run)
    if not writer.close():
        raise OSError(f"could not write the recovered runs into {store.root}")
    return runs


def _crashed_run(
    session: SessionInfo, opened: dict[str, Any], progress: Any
) -> tuple[CellRun, RunSeries]:
    """The record of a run that never closed, and its series, from what was journaled."""

    started = float(opened["started_at_unix_s"])
    kind: RunKind = "provrun" if opened["kind"] == "provrun" else "cell"
    # The last moment the run is known to have been alive: its last checkpoint.
    last_seen = progress.last_seen_unix_s if progress is not None else None
    ended = max(started, last_seen or started)
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
    run = CellRun(
        run_id=str(opened["run_id"]),
        session_id=session.session_id,
        kind=kind,
        cell=CellRef(
            sha256=str(opened["cell_sha256"]),
            source=redact_source(source) if isinstance(source, str) else "",
            cell_id=opened.get("cell_id"),
            execution_count=opened.get("execution_count"),
            notebook_path=opened.get("notebook_path", session.notebook_path),
        ),
        started_at_unix_s=started,
        ended_at_unix_s=ended,
        wall_time_s=ended - started,
        cpu_time_s=progress.cpu_time_s if progress is not None else 0.0,
        status="crashed",
        error_type="KernelDied",
        name=opened.get("name"),
        params=tuple(params),
        hardware=hardware,
    )
    return run, series
