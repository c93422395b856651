"""The on-disk store: where things live, atomic writes, and reading runs back.

<store>/sessions/<session_id>/journal.jsonl          append-only event log
<store>/sessions/<session_id>/runs/<run_id>.prov.json        one per %%provrun
<store>/sessions/<session_id>/runs/<run_id>.<role>.parquet   its data files
<store>/index.sqlite                                 every closed run, derived from the journals
<store>/annotations.jsonl       append-only tags, notes and deletions (store/annotations.py)
<store>/trash/                  emptied sessions being removed (store/run_deletion.py)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.records import CellRun, SessionInfo
from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.annotations import AnnotationsReader
from jupyter_prov4ml.store.codec import CELL_EVENT, expand_cell, run_from_dict, session_from_dict
from jupyter_prov4ml.store.files import make_private_dirs
from jupyter_prov4ml.store.journal import JournalState, read_journal

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from jupyter_prov4ml.store.annotations import Annotations
    from jupyter_prov4ml.store.index import IndexedRun, RunIndex, RunQuery, StoredRecord

T = TypeVar("T")


class UnsafeStorePath(ValueError):
    """A path or id read from a store that would lead outside it."""


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as the store knows it: its record and the PROV document that holds it."""

    run: CellRun
    session: SessionInfo | None
    prov_path: Path | None

    def document(self) -> ProvDocument:
        """Its PROV document: the run's own file where it has one (in `runs/`), else built
        from its journal record (plain cells share documents of many cells)."""
        from jupyter_prov4ml import provmodel

        path = self.prov_path
        if path is not None and path.parent.name == "runs" and path.is_file():
            return provmodel.load_document(path)
        return provmodel.run_document(self.run, self.session)


class Store:
    """Paths and file operations of one store directory."""

    def __init__(
        self,
        root: Path,
        modes: StoreModes = PRIVATE,
        on_damage: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.modes = modes
        # Told (one line) when reading skipped damaged journal lines; what is valid is kept.
        self.on_damage = on_damage
        self._annotations = AnnotationsReader(root)

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    def session_dir(self, session_id: str) -> Path:
        """The folder of a session; raises UnsafeStorePath for a text that is not an id (a
        store is untrusted input: `../../elsewhere` must never name a folder)."""
        if not valid_id(session_id):
            raise UnsafeStorePath(f"not a session id: {session_id!r:.80}")
        return self.sessions_dir / session_id

    def journal_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "journal.jsonl"

    def run_path(self, run: CellRun, suffix: str) -> Path:
        if not valid_id(run.run_id):
            raise UnsafeStorePath(f"not a run id: {run.run_id!r:.80}")
        return self.session_dir(run.session_id) / "runs" / f"{run.run_id}{suffix}"

    def resolve(self, relpath: object) -> Path:
        """The file a path read from the store names, which must lie inside the store (links
        followed); raises UnsafeStorePath otherwise: absolute paths, `..`, links out."""
        if not isinstance(relpath, str) or not relpath or "\x00" in relpath:
            raise UnsafeStorePath(f"not a path inside the store: {relpath!r:.80}")
        root = self.root.resolve()
        path = (root / relpath).resolve()
        if Path(relpath).is_absolute() or not path.is_relative_to(root):
            raise UnsafeStorePath(f"{relpath!r:.80} is outside the store {self.root}")
        return path

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def copy_in(self, source: Path, target: Path) -> None:
        """Copy a file the user named into the store (`target`, inside it), with the store's
        folder and file modes."""
        make_private_dirs(target.parent, self.modes)
        shutil.copy2(source, target)
        os.chmod(target, self.modes.file)  # copy2 would keep the source's (often wider) mode

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

    def runs(self, session_id: str | None = None) -> list[StoredRun]:
        """Every closed run in the store (or of one kernel session), oldest first, read
        through the index, which catches up from the journals first."""
        records = self._with_index(lambda index: index.records(session_id=session_id))
        return self._decode(records)

    def query(self, query: RunQuery | None = None) -> list[IndexedRun]:
        """The runs a listing shows (filtered, oldest first), without decoding full records."""
        return self.listing(query)[0]

    def listing(self, query: RunQuery | None = None) -> tuple[list[IndexedRun], int]:
        """`query`'s runs, and how many matched its filters before `last` kept the newest."""
        from jupyter_prov4ml.store.index import RunQuery

        wanted = query if query is not None else RunQuery()
        return self._with_index(
            lambda index: (index.query(wanted), index.count(wanted)), tag=wanted.tag
        )

    def find(self, run_ref: str) -> StoredRun:
        """The run whose id is `run_ref`, or ends with it (a unique suffix is enough)."""

        def lookup(index: RunIndex) -> list[StoredRecord]:
            matches = index.matching_ids(run_ref)
            if len(matches) > 1:
                raise LookupError(f"{run_ref!r} matches {len(matches)} runs; give more of the id")
            return index.records(matches)

        found = self._decode(self._with_index(lookup))
        if not found:
            raise LookupError(f"no run {run_ref!r} in {self.root}")
        return found[0]

    def _with_index(self, answer: Callable[[RunIndex], T], tag: str | None = None) -> T:
        from jupyter_prov4ml.store.index import answer_from_index

        # Tags and deletions live beside the journals, not in the (derived) index: applied
        # before every answer, they hold whatever happened to the index file.
        annotations = self._annotations.read()
        if annotations.too_large:
            self._tell(f"{self.root}/annotations.jsonl is too large; tags and deletions not read")
        elif annotations.bad_lines:
            self._tell(
                f"skipped {annotations.bad_lines} damaged line(s) of {self.root}/annotations.jsonl"
            )

        def annotated(index: RunIndex) -> T:
            index.apply_annotations(annotations.deleted, annotations.tag_pairs(tag))
            return answer(index)

        return answer_from_index(self.root, self.modes, annotated, self._report)

    def annotations(self) -> Annotations:
        """The store's tags, notes and deletions (store/annotations.py); read-only."""
        return self._annotations.read()

    def _tell(self, message: str) -> None:
        if self.on_damage is not None:
            self.on_damage(message)

    def _report(self, bad_lines: int) -> None:
        if bad_lines and self.on_damage is not None:
            self.on_damage(
                f"skipped {bad_lines} damaged journal line(s) in {self.root}; "
                "every valid run is still listed"
            )

    def _decode(self, records: Iterable[StoredRecord]) -> list[StoredRun]:
        sessions: dict[str | None, SessionInfo | None] = {}
        found: list[StoredRun] = []
        for record in records:
            session_json = record.session_json
            if session_json not in sessions:
                try:
                    sessions[session_json] = session_from_dict(json.loads(session_json or ""))
                except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
                    sessions[session_json] = None  # the run is still the run without it
            session = sessions[session_json]
            try:
                entry = json.loads(record.record_json)
                if entry["event"] == CELL_EVENT:
                    if session is None:
                        continue  # a compact line says nothing without its session
                    data = expand_cell(entry, session.session_id, session.notebook_path)
                else:
                    data = entry["run"]
                run = run_from_dict(data)
            except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
                continue
            prov = None
            if record.prov_path:
                try:
                    prov = self.resolve(record.prov_path)
                except UnsafeStorePath as unsafe:
                    self._tell(f"run {run.run_id!r:.80}: {unsafe}; its document is not read")
            found.append(StoredRun(run, session, prov))
        return found
