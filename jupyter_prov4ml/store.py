"""The on-disk store: where things live, atomic writes, and reading runs back.

<store>/sessions/<session_id>/journal.jsonl          append-only event log
<store>/sessions/<session_id>/session.prov.json      PROV-JSON of the session's plain cells
<store>/sessions/<session_id>/runs/<run_id>.prov.json        one per %%provrun
<store>/sessions/<session_id>/runs/<run_id>.<role>.parquet   its data files
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .journal import JournalState, read_journal
from .records import CellRun, SessionInfo

STORE_ENV = "JUPYTER_PROV4ML_STORE"
DEFAULT_DIRNAME = "prov4ml"


def resolve_store_root(environ: Mapping[str, str], cwd: Path) -> Path:
    """`$JUPYTER_PROV4ML_STORE`, else `prov4ml/` in the kernel's working directory."""
    configured = environ.get(STORE_ENV)
    root = Path(configured).expanduser() if configured else cwd / DEFAULT_DIRNAME
    return root if root.is_absolute() else (cwd / root)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as the store knows it: its record and the PROV document that holds it."""

    run: CellRun
    session: SessionInfo | None
    prov_path: Path | None


class Store:
    """Paths and file operations of one store directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def journal_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "journal.jsonl"

    def cells_document_path(self, session_id: str, sequence: int) -> Path:
        return self.session_dir(session_id) / f"cells-{sequence:04d}.prov.json"

    def run_path(self, run: CellRun, suffix: str) -> Path:
        return self.session_dir(run.session_id) / "runs" / f"{run.run_id}{suffix}"

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- reading -------------------------------------------------------------------------

    def journals(self) -> Iterator[tuple[str, JournalState]]:
        try:
            entries = sorted(self.sessions_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            journal = entry / "journal.jsonl"
            if journal.is_file():
                yield entry.name, read_journal(journal)

    def runs(self) -> list[StoredRun]:
        """Every closed run in the store, oldest first."""
        found: list[StoredRun] = []
        for _, state in self.journals():
            for run, prov in state.closed.values():
                prov = prov or state.documents.get(run.run_id)
                found.append(StoredRun(run, state.session, self.root / prov if prov else None))
        found.sort(key=lambda stored: (stored.run.started_at_unix_s, stored.run.run_id))
        return found

    def find(self, run_ref: str) -> StoredRun:
        """The run whose id is `run_ref`, or ends with it (a unique suffix is enough)."""
        runs = self.runs()
        exact = [s for s in runs if s.run.run_id == run_ref]
        matches = exact or [s for s in runs if s.run.run_id.endswith(run_ref)]
        if not matches:
            raise LookupError(f"no run {run_ref!r} in {self.root}")
        if len(matches) > 1:
            raise LookupError(f"{run_ref!r} matches {len(matches)} runs; give more of the id")
        return matches[0]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    make_private_dirs(path.parent)
    # mkstemp creates the file 0600: provenance stays readable by the user only.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_private_dirs(path: Path) -> None:
    """`mkdir -p` with new folders readable by the user only (0700)."""
    if path.is_dir():
        return
    make_private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
