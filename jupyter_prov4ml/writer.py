"""The store writer thread: every file the extension writes is written here, off the cell.

Cell hooks only append to a deque; this thread turns records into journal lines, data files and
PROV documents. When the store cannot be written, records wait in memory (bounded) and are
written when it works again; the user hears about it once, through `Notices`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .journal import encode_line, read_journal, run_to_dict, session_to_dict
from .notices import Notices
from .records import CellRun, DataFile, SessionInfo
from .store import Store, atomic_write_bytes, make_private_dirs

if TYPE_CHECKING:
    from prov.model import ProvDocument

DEFAULT_PERIOD_S = 0.5
DEFAULT_MAX_PENDING = 20_000
_NOTICE_KEY = "store"


@dataclasses.dataclass(slots=True)
class _Line:
    event: str
    payload: dict[str, Any]


@dataclasses.dataclass(slots=True)
class _OpenEvent:
    run_id: str
    kind: str
    cell_sha256: str
    cell_id: str | None
    started_at_unix_s: float


@dataclasses.dataclass(slots=True)
class _RunJob:
    run: CellRun
    series: Mapping[str, Mapping[str, Sequence[float]]]
    future: Future[ProvDocument]
    document: ProvDocument | None = None


@dataclasses.dataclass(slots=True)
class _FlushMarker:
    done: threading.Event
    write_session_document: bool


_Item = _Line | _OpenEvent | CellRun | _RunJob | _FlushMarker


class StoreWriter:
    """Writes one kernel session's records into a `Store` from a daemon thread."""

    def __init__(
        self,
        store: Store,
        session: SessionInfo,
        notices: Notices,
        period_s: float = DEFAULT_PERIOD_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.store = store
        self.session = session
        self.notices = notices
        self.period_s = period_s
        self.max_pending = max_pending
        self._pending: deque[_Item] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._journal: IO[str] | None = None
        self._failing = False
        self._plain_cells_since_document = 0
        self._dropped = 0
        self._pending.append(_Line("session", {"session": session_to_dict(session)}))

    # -- main-thread side: cheap ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="jupyter-prov4ml-writer", daemon=True
        )
        self._thread.start()

    def opened(
        self, run_id: str, kind: str, sha256: str, cell_id: str | None, started: float
    ) -> None:
        self._append(_OpenEvent(run_id, kind, sha256, cell_id, started))

    def closed(self, run: CellRun) -> None:
        self._append(run)

    def submit_run(
        self, run: CellRun, series: Mapping[str, Mapping[str, Sequence[float]]]
    ) -> Future[ProvDocument]:
        """Queue a %%provrun run; the future gives its PROV document once built."""
        job = _RunJob(run, series, Future())
        self._append(job)
        self._wake.set()
        return job.future

    def flush(self, timeout_s: float = 10.0, session_document: bool = True) -> bool:
        """Write everything queued so far (and the session's PROV document). False on timeout."""
        marker = _FlushMarker(threading.Event(), session_document)
        self._append(marker)
        if self._thread is None or not self._thread.is_alive():
            self._drain()
        else:
            self._wake.set()
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush, stop the thread and close the journal."""
        flushed = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._drain_lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
        return flushed

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def _append(self, item: _Item) -> None:
        self._pending.append(item)
        if len(self._pending) > self.max_pending:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        # Keep the session header and run jobs; plain-cell events are the cheapest to lose.
        for index, item in enumerate(self._pending):
            if isinstance(item, _OpenEvent | CellRun):
                del self._pending[index]
                self._dropped += 1
                self.notices.warn(
                    "store-dropped",
                    f"store unwritable for long; dropping the oldest cell records "
                    f"(kept the last {self.max_pending})",
                )
                return

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period_s)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            wrote_lines = False
            try:
                while self._pending:
                    item = self._pending[0]
                    try:
                        wrote_lines |= self._write(item)
                    except OSError:
                        raise
                    # A record we cannot encode is our bug, not the store's: drop that one
                    # record, say so once, and keep writing the others.
                    except Exception as error:  # noqa: BLE001
                        self._give_up_on(item, error)
                    self._pending.popleft()
                if wrote_lines and self._journal is not None:
                    self._journal.flush()
            except OSError as error:
                self._on_failure(error)
                return
            if self._failing:
                self._failing = False
                self.notices.reset(_NOTICE_KEY)
                self.notices.warn("store-recovered", f"store {self.store.root} is writable again")

    def _give_up_on(self, item: _Item, error: Exception) -> None:
        if isinstance(item, _RunJob) and not item.future.done():
            item.future.set_exception(error)
        if isinstance(item, _FlushMarker):
            item.done.set()
        self.notices.warn("writer-bug", f"could not save a record ({error!r}); it was skipped")

    def _on_failure(self, error: OSError) -> None:
        self._failing = True
        self.notices.reset("store-recovered")
        if self._journal is not None:
            with contextlib.suppress(OSError):
                self._journal.close()
            self._journal = None
        self.notices.warn(
            _NOTICE_KEY,
            f"cannot write provenance to {self.store.root} ({error.strerror or error}); "
            "keeping records in memory and retrying",
        )

    def _write(self, item: _Item) -> bool:
        """Write one item; True when it added journal lines. Raises OSError to retry later."""
        if isinstance(item, _Line):
            self._journal_line(item.event, item.payload)
            return True
        if isinstance(item, _OpenEvent):
            self._journal_line("open", dataclasses.asdict(item))
            return True
        if isinstance(item, CellRun):
            self._plain_cells_since_document += 1
            prov = self.store.relpath(self.store.session_prov_path(item.session_id))
            self._journal_line("close", {"run": run_to_dict(item), "prov_path": prov})
            return True
        if isinstance(item, _RunJob):
            self._write_run(item)
            return True
        # Everything before the marker must be readable by whoever waits on it: push the
        # journal's buffer to the OS before saying so.
        if self._journal is not None:
            self._journal.flush()
        if item.write_session_document and self._plain_cells_since_document:
            self._write_session_document()
        item.done.set()
        return False

    def _write_run(self, job: _RunJob) -> None:
        from . import provmodel

        run = job.run
        if not job.run.data_files:
            files = tuple(self._data_file(run, role, cols) for role, cols in job.series.items())
            run = job.run = dataclasses.replace(run, data_files=files)
        if job.document is None:
            job.document = provmodel.run_document(run, self.session)
            job.future.set_result(job.document)
        path = self.store.run_path(run, ".prov.json")
        atomic_write_bytes(path, provmodel.serialize(job.document).encode("utf-8"))
        self._journal_line(
            "close", {"run": run_to_dict(run), "prov_path": self.store.relpath(path)}
        )

    def _data_file(
        self, run: CellRun, role: str, columns: Mapping[str, Sequence[float]]
    ) -> DataFile:
        from .columnar import parquet_bytes

        data = parquet_bytes(columns)
        path = self.store.run_path(run, f".{role}.parquet")
        atomic_write_bytes(path, data)
        return DataFile(
            role=role,
            relpath=self.store.relpath(path),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            media_type="application/vnd.apache.parquet",
        )

    def _write_session_document(self) -> None:
        from . import provmodel

        if self._journal is not None:
            self._journal.flush()
        state = read_journal(self.store.journal_path(self.session.session_id))
        cells = [run for run, _ in state.closed.values() if run.kind == "cell"]
        document = provmodel.session_document(cells, state.session or self.session)
        path = self.store.session_prov_path(self.session.session_id)
        atomic_write_bytes(path, provmodel.serialize(document).encode("utf-8"))
        self._plain_cells_since_document = 0

    def _journal_line(self, event: str, payload: dict[str, Any]) -> None:
        if self._journal is None:
            self._journal = _open_private_append(self.store.journal_path(self.session.session_id))
        self._journal.write(encode_line(event, payload))


def _open_private_append(path: Path) -> IO[str]:
    """Open for appending, creating the folders (0700) and the file (0600) for the user only."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
