"""Deleting runs so that a crash part-way leaves no half run (`rm`, `gc`).

1. A tombstone per run is appended to the store's annotations file and flushed to disk. From
   then on every reader treats the run as gone (the index drops it before each answer,
   rebuilt or not), whatever state its files are in.
2. The run's files are removed: everything in its session's `runs/` folder named
   `<run_id>.…` (its PROV document, Parquet files, copied artifacts).
3. A session none of whose runs is left, and whose kernel is not alive, is moved whole into
   `<store>/trash/` (one rename) and removed from there: its journal, documents and lock go.

Each step can be repeated: `finish_deletes` redoes 2 and 3 for every tombstone and empties
the trash, so the next `rm` or `gc` completes a delete that a kill interrupted. The journal of
a session that keeps other runs is never rewritten (it is append-only, and a live kernel may
be appending to it): the deleted run's record stays in it, hidden by its tombstone.

`JUPYTER_PROV4ML_TEST_KILL_AT` (tests only) names a point at which the process kills itself
with SIGKILL: `tombstoned` (after step 1), `removing` (after the first file of step 2),
`trashed` (after a session's rename in step 3).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.store.annotations import (
    Annotations,
    append_annotations,
    delete_line,
    read_annotations,
)
from jupyter_prov4ml.store.files import make_private_dirs
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.session_lock import LOCK_NAME, SessionLock

if TYPE_CHECKING:
    from jupyter_prov4ml.store.layout import Store

KILL_AT_ENV = "JUPYTER_PROV4ML_TEST_KILL_AT"
TRASH_NAME = "trash"
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w`, `45s` in seconds; ValueError otherwise."""
    match = _AGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r:.40} is not an age such as 30d, 12h, 90m, 2w")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > 1e11:
        raise ValueError(f"{text!r:.40} is too long an age")
    return seconds


@dataclass(frozen=True, slots=True)
class RunToDelete:
    """A run chosen for deletion, as the index lists it."""

    run_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class DeletionOutcome:
    """What a delete did: runs tombstoned now, files and sessions removed (this call's and
    any an interrupted delete had left)."""

    runs: tuple[str, ...]
    files_removed: int
    sessions_removed: tuple[str, ...]


def delete_runs(store: Store, runs: Sequence[RunToDelete]) -> DeletionOutcome:
    """Tombstone `runs` (durably, first), then remove their files and emptied sessions.
    Raises OSError when the tombstones cannot be written (then nothing was removed)."""
    for run in runs:
        if not (valid_id(run.run_id) and valid_id(run.session_id)):
            raise ValueError(f"not a run of this store: {run.run_id!r:.80}")
    append_annotations(
        store.root, (delete_line(run.run_id, run.session_id) for run in runs), store.modes
    )
    _kill_point("tombstoned")
    files, sessions = finish_deletes(store)
    return DeletionOutcome(tuple(run.run_id for run in runs), files, sessions)


def finish_deletes(
    store: Store, annotations: Annotations | None = None
) -> tuple[int, tuple[str, ...]]:
    """Remove what tombstoned runs left behind; (files removed, sessions removed)."""
    state = annotations if annotations is not None else read_annotations(store.root)
    _empty_trash(store.root)
    by_session: dict[str, set[str]] = {}
    for run_id, session_id in state.deleted.items():
        by_session.setdefault(session_id, set()).add(run_id)
    removed = 0
    sessions: list[str] = []
    for session_id, run_ids in sorted(by_session.items()):
        session_dir = store.session_dir(session_id)
        if not session_dir.is_dir() or session_dir.is_symlink():
            continue
        removed += _remove_run_files(session_dir / "runs", run_ids)
        if _remove_session_if_empty(store, session_id, session_dir, state.deleted.keys()):
            sessions.append(session_id)
    return removed, tuple(sessions)


def runs_older_than(
    store: Store, age_s: float, keep_tagged: bool, now_unix_s: float | None = None
) -> list[RunToDelete]:
    """The runs `gc` deletes: begun more than `age_s` ago, not tagged if `keep_tagged`."""
    cutoff = (time.time() if now_unix_s is None else now_unix_s) - age_s
    tags = store.annotations().tags if keep_tagged else {}
    return [
        RunToDelete(run.run_id, run.session_id)
        for run in store.query()
        if run.started_at_unix_s < cutoff and not tags.get(run.run_id)
    ]


def _remove_run_files(runs_dir: Path, run_ids: set[str]) -> int:
    """Remove `runs_dir/<run_id>.…` for each id (folders too, never following a link)."""
    if runs_dir.is_symlink():
        return 0  # a store is untrusted: never delete in a folder a link leads to
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        if not _belongs_to(entry.name, run_ids):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed += 1
        _kill_point("removing")
    return removed


def _belongs_to(name: str, run_ids: set[str]) -> bool:
    """Whether a file name is `<one of run_ids>.<suffix>` (ids may hold dots themselves)."""
    position = name.find(".")
    while position > 0:
        if name[:position] in run_ids:
            return True
        position = name.find(".", position + 1)
    return False


def _remove_session_if_empty(
    store: Store, session_id: str, session_dir: Path, deleted: Iterable[str]
) -> bool:
    """Move a session with no run left (and no kernel alive) to the trash, and empty it."""
    journal = read_journal(session_dir / "journal.jsonl")
    gone = set(deleted)
    if journal.open or not journal.closed or not journal.closed.keys() <= gone:
        return False
    lock: SessionLock | None = None
    if (session_dir / LOCK_NAME).exists():
        lock = SessionLock.take_if_dead(session_dir)
        if lock is None:
            return False  # its kernel is alive (it may record more runs)
    try:
        trash = store.root / TRASH_NAME
        if trash.is_symlink():
            return False
        make_private_dirs(trash, store.modes)
        target = trash / f"{session_id}.{time.time_ns()}"
        try:
            os.rename(session_dir, target)
        except OSError:
            return False
        _kill_point("trashed")
    finally:
        if lock is not None:
            lock.release(remove=False)  # the file went with its folder
    shutil.rmtree(target, ignore_errors=True)
    return True


def _empty_trash(store_root: Path) -> None:
    trash = store_root / TRASH_NAME
    if trash.is_symlink():
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(trash):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _kill_point(name: str) -> None:
    """Tests only: die here, as a crash would, when `$JUPYTER_PROV4ML_TEST_KILL_AT` names
    this point."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
