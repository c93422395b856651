"""The heavy lane of the store writer: a finished run's data files and PROV document.

A large run's Parquet files and document take a while to make (a 200,000-point run: about a
second of CPU). They are made on a thread of their own, so that the journal writer keeps
writing the closes of the cells that run meanwhile: a cell's close never waits behind a run's
files. When a run's files are written, its full record goes back to the journal writer as a
`RunFilesWritten`; a flush marker passes through this lane too, so it reaches the journal
writer after the runs queued before it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import CellRun, DataFile, SessionInfo
from jupyter_prov4ml.store.files import atomic_write_bytes
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.series_files import encode_run_series, warm_up_series_files

if TYPE_CHECKING:
    from prov.model import ProvDocument


@dataclasses.dataclass(slots=True)
class RunJob:
    """A finished run whose files are to be made; `future` gives its PROV document."""

    run: CellRun
    series: RunSeries
    future: Future[ProvDocument]
    document: ProvDocument | None = None
    encoded: bool = False


class RunFilesWritten(NamedTuple):
    """A run whose data files and document are written: its full record, to be journaled."""

    run: CellRun
    prov_path: str


class RunFiles:
    """Makes runs' files on its own thread, oldest first; hands each result (and each flush
    marker, in order) to `forward`."""

    def __init__(
        self,
        store: Store,
        session: SessionInfo,
        notices: Notices,
        forward: Callable[[Any], None],
        period_s: float,
    ) -> None:
        self.store = store
        self.session = session
        self.notices = notices
        self.period_s = period_s
        self._forward = forward
        self._queue: deque[Any] = deque()
        # Held to append and to copy the queue (iterating a deque another thread appends to
        # raises); `_lock` is held while runs' files are made.
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._warm = False
        self._warm_wanted = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="jupyter-prov4ml-run-files", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __len__(self) -> int:
        return sum(isinstance(item, RunJob) for item in self._snapshot())

    def _snapshot(self) -> list[Any]:
        with self._queue_lock:
            return list(self._queue)

    def submit(self, job: RunJob) -> None:
        with self._queue_lock:
            self._queue.append(job)
        self._wake.set()

    def pass_along(self, marker: Any) -> None:
        """Forward `marker` once every run queued before it is done."""
        with self._queue_lock:
            self._queue.append(marker)
        self._wake.set()

    def prepare(self) -> None:
        """A run is coming: import what saving it needs now, while it runs (at interpreter
        exit imports fail)."""
        if not self._warm:
            self._warm_wanted = True
            self._wake.set()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period_s)
            self._wake.clear()
            # A bug of ours must not end the thread: later runs would never be written.
            try:
                self.work()
            except Exception as error:  # noqa: BLE001 - said once; the next pass retries
                self.notices.warn("writer-bug", f"saving runs' files hit a bug ({error!r})")

    def work(self) -> None:
        """Make the queued runs' files (this thread, or inline when it is not running).
        A run whose files cannot be written now (the store) waits for the next try."""
        with self._lock:
            # Only for a run: a flush marker passing through must not import pyarrow.
            if not self._warm and (self._warm_wanted or len(self)):
                self._warm_up()
            while self._queue:
                item = self._queue[0]
                if isinstance(item, RunJob):
                    try:
                        written = self._write(item)
                    except OSError as error:
                        self._cannot_write(error)
                        return
                    # A run we cannot encode is our bug, not the store's: its record (journaled
                    # when it ended) stays; say so once and go on.
                    except Exception as error:  # noqa: BLE001
                        if not item.future.done():
                            item.future.set_exception(error)
                        self.notices.warn(
                            "writer-bug", f"could not save a run's files ({error!r}); skipped"
                        )
                        written = None
                    with self._queue_lock:
                        self._queue.popleft()
                    if written is not None:
                        self._forward(written)
                else:
                    with self._queue_lock:
                        self._queue.popleft()
                    self._forward(item)

    def _cannot_write(self, error: OSError) -> None:
        # Flushes waiting behind the run hear now that it could not be done, not in 10 s.
        markers = [item for item in self._snapshot() if not isinstance(item, RunJob)]
        with self._queue_lock:
            for marker in markers:
                self._queue.remove(marker)
        for marker in markers:
            self._forward(marker)
        self.notices.warn(
            "store",
            f"cannot write provenance to {self.store.root} ({error.strerror or error}); "
            "keeping records in memory and retrying",
        )

    def _warm_up(self) -> None:
        """Save a one-point run into memory: every lazy import on the path that saves runs
        happens now, so none is left for the exit path."""
        self._warm = True
        try:
            warm_up_series_files()
            from jupyter_prov4ml import provmodel

            provmodel.serialize(provmodel.session_document([], self.session))
        except Exception as error:  # noqa: BLE001 - the run is saved later all the same
            self.notices.warn("warm-up", f"could not prepare to save runs ({error!r})")

    def _write(self, job: RunJob) -> RunFilesWritten:
        from jupyter_prov4ml import provmodel

        run = job.run
        if not job.encoded:
            try:
                encoded, fields = encode_run_series(job.series)
            except Exception as error:  # noqa: BLE001 - the record is worth saving without them
                self.notices.warn("series", f"a run's data files could not be made ({error!r})")
                encoded, fields = [], {}
            data_files = tuple(self._data_file(run, role, data) for role, data in encoded)
            run = job.run = dataclasses.replace(run, data_files=data_files, **fields)
            job.encoded = True
        if job.document is None:
            job.document = provmodel.run_document(run, self.session)
            job.future.set_result(job.document)
        path = self.store.run_path(run, ".prov.json")
        data = provmodel.serialize(job.document).encode("utf-8")
        atomic_write_bytes(path, data, self.store.modes)
        return RunFilesWritten(run, self.store.relpath(path))

    def _data_file(self, run: CellRun, role: str, data: bytes) -> DataFile:
        path = self.store.run_path(run, f".{role}.parquet")
        atomic_write_bytes(path, data, self.store.modes)
        return DataFile(
            role=role,
            relpath=self.store.relpath(path),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            media_type="application/vnd.apache.parquet",
        )
