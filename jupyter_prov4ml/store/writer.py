"""The store writer thread: every file the extension writes is written here, off the cell.

Cell hooks only append to a queue; this thread turns what they appended into journal lines
(`JournalFile`), data files and PROV documents, and adds the runs it closed to the store's
index (`IndexSync`, one SQLite transaction per drain). A plain cell costs one compact journal
line and one index row: its PROV document is made from that line when it is read (export,
show), never ahead of time, which kept a trivial cell's store cost 5x larger.

The durability rule lives in `_write_pending`: an item leaves the queue only after the
journal lines it makes are written to the OS. When the store cannot be written, records wait
in memory (bounded) and are written when it works again; the user hears about it once, via
`Notices`, and `flush` says truthfully how many records are still waiting. No item is large
(progress comes in bounded slices), so a nearly full disk cannot hold one item up forever.
The index is derived data: when it cannot be written, readers rebuild it from the journal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from jupyter_prov4ml.capture.progress import ProgressSlice
from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow, StartedCell
from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.identity import source_sha256
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import CellRun, SessionInfo
from jupyter_prov4ml.redaction import redact_source
from jupyter_prov4ml.store.codec import (
    cell_entry,
    encode_entry,
    encode_line,
    jsonable,
    progress_to_dict,
    run_to_dict,
    session_to_dict,
)
from jupyter_prov4ml.store.index_sync import IndexSync
from jupyter_prov4ml.store.journal_file import JournalFile
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.run_files import RunFiles, RunFilesWritten, RunJob

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from jupyter_prov4ml.store.session_lock import SessionLock

DEFAULT_PERIOD_S = 0.5
DEFAULT_MAX_PENDING = 20_000
INDEX_PERIOD_S = 5.0
# How long a periodic drain waits for the kernel to be idle (see `_await_quiet`), how often it
# looks, and how long after a cell ends its reply is taken to be on its way.
QUIET_WAIT_S = 0.05
QUIET_POLL_S = 0.001
REPLY_GRACE_NS = 1_000_000
_NOTICE_KEY = "store"


class Recovery(Protocol):
    """What a recovery pass reports: true when it finalised something."""

    def __bool__(self) -> bool: ...

    def describe(self) -> str: ...


class _Line(NamedTuple):
    event: str
    payload: dict[str, Any]


class _Progress(NamedTuple):
    piece: ProgressSlice


class _Announce(NamedTuple):
    """A finished run's record, journaled before its data files are made."""

    run: CellRun


class _Opened(NamedTuple):
    window: OpenWindow
    kind: str
    details: dict[str, Any] | None


@dataclasses.dataclass(slots=True)
class _FlushMarker:
    done: threading.Event
    written: bool = False  # everything queued before the marker reached the journal


_OtherItem = _Line | _Progress | _Opened | _Announce | RunFilesWritten | _FlushMarker
_Item = ClosedCell | _OtherItem
# One write to the journal takes at most this many items' lines (or about this many bytes).
_BATCH_ITEMS = 256
# A patient drain's batch: ~1 ms of the writer in a kernel, then it looks for a quiet moment
# again (a notebook's next cell may have come meanwhile).
_PATIENT_BATCH_ITEMS = 48
_BATCH_BYTES = 1 << 20
# What an item does once its lines are written, told where its first line starts.
_Done = Callable[[int], None]


class CellSource(Protocol):
    """Where plain cells come from (the kernel's recorder), as the writer sees it."""

    # The top-level cell running now, and when the last one ended (perf_counter_ns).
    running: StartedCell | None
    ended_perf_ns: int

    @property
    def unsettled(self) -> int:
        """How many ended cells it holds back."""

    def settle(self) -> None:
        """Hand over the cells held back (their records are made in a batch)."""

    def window_of(self, started: StartedCell) -> OpenWindow:
        """A window for a running cell (for its open line)."""


class StoreWriter:
    """Writes one kernel session's records into a `Store` from a daemon thread."""

    def __init__(
        self,
        store: Store,
        session: SessionInfo,
        notices: Notices,
        period_s: float = DEFAULT_PERIOD_S,
        max_pending: int = DEFAULT_MAX_PENDING,
        resumed: bool = False,
        recover: Callable[[Store, Notices], Recovery] | None = None,
    ) -> None:
        """`resumed`: write into the journal of an earlier session (that `recovery` holds the
        lock of) instead of starting one: no session line, no lock, no recovery pass.
        `recover`: run once in the writer thread at start-up, to finalise what kernels that
        died on this store left open (the kernel passes `recovery.recover_store`)."""
        self.store = store
        self.session = session
        self.notices = notices
        self.period_s = period_s
        self.max_pending = max_pending
        self._pending: deque[_Item] = deque()
        # Runs whose data files and documents are still to be made: the heavy lane, on a
        # thread of its own, so a cell's close never waits behind a large run's files.
        self._files = RunFiles(store, session, notices, self._append, period_s)
        # Where plain cells come from (see `take_from`); the running one is journaled as
        # open once it runs long, unless a run's own open line was journaled for it (kept
        # after the run closes: its cell may run on, showing the run, and a cell's open line
        # after the run's close would reopen it for recovery; one id per run).
        self._cells: CellSource | None = None
        self._journaled_sequence = 0
        self._opened_runs: set[str] = set()
        # Runs' closes queued (main thread) and settled (written), so the next cell can make
        # sure a finished run's record is written before it runs (`wait_for_closes`).
        self._closes_queued = 0
        self._closes_settled = 0
        self._settled = threading.Condition()
        self._last_index_sync = 0.0
        # Guards the queue: the main and sampler threads append (a full queue drops old
        # items), the writer snapshots it and takes written items off the front.
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._journal: JournalFile | None = None
        self._failing = False
        self._index = IndexSync(store.root, session.session_id, store.modes)
        self._journal_begun = False
        self._resumed = resumed
        self._recover = recover
        # Held while the session lives, so `recovery` can tell a dead kernel from a busy one.
        self._lock: SessionLock | None = None
        if not resumed:
            self._pending.append(_Line("session", {"session": session_to_dict(session)}))

    # -- main-thread side: cheap ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="jupyter-prov4ml-writer", daemon=True
        )
        self._thread.start()
        self._files.start()

    def take_from(self, cells: CellSource) -> None:
        """Plain cells come from `cells`: settled before each write and flush (so a paused
        notebook's last cells are written within a period too), and looked at for a quiet
        moment and for a cell running long (journaled as open, for recovery). A plain cell
        costs nothing here while it runs: a short one gets a close line and nothing else."""
        self._cells = cells

    def opened(self, window: OpenWindow, kind: str, details: dict[str, Any] | None = None) -> None:
        """A run started (a %%provrun); `details` (JSON-ready) is what recovery would need
        beyond it. Journaled at once."""
        self._opened_runs.add(window.run_id)  # this open line (with its details) is the one
        self._append(_Opened(window, kind, details))
        self._files.prepare()  # while the run runs, not when it ends

    def prepare_for_runs(self) -> None:
        """A run is coming (the API was used): import what saving it needs, now."""
        self._files.prepare()

    def progress(self, piece: ProgressSlice) -> None:
        """A running `%%provrun`'s progress (from the sampler thread): journaled now, so a
        killed kernel loses at most one checkpoint period."""
        self._append(_Progress(piece))
        self._wake.set()

    def closed_cell(self, cell: ClosedCell) -> None:
        """A plain cell ended: its close is written at the writer's next period (waking the
        writer for every cell would double a trivial cell's cost: a kill loses at most the
        plain cells of the last period, as the README says)."""
        self._enqueue(cell)  # a cell wakes nobody

    def closed_cells(self, cells: list[ClosedCell]) -> None:
        """Plain cells that ended, in order (the recorder settles them in batches)."""
        self._enqueue(*cells)

    def submit_run(self, run: CellRun, series: RunSeries) -> Future[ProvDocument]:
        """Queue a run: its record is journaled at once (without data files), then its data
        files and document, and its record again with them. The future gives the document."""
        job = RunJob(run, series, Future())
        self._closes_queued += 1
        self._append(_Announce(run))
        self._files.submit(job)
        self._wake.set()
        return job.future

    def wait_for_closes(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every run's record queued so far is written; True
        at once when it is, and without waiting while the store cannot be written."""
        queued = self._closes_queued
        if self._closes_settled >= queued or self._failing:
            return self._closes_settled >= queued
        with self._settled:
            return (
                self._settled.wait_for(
                    lambda: self._closes_settled >= queued or self._failing, timeout_s
                )
                and self._closes_settled >= queued
            )

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything queued so far. False when that could not be done now (the store
        is unwritable: see `pending_count`) or did not finish within `timeout_s`."""
        self._feed()
        marker = _FlushMarker(threading.Event())
        # Through the runs' lane first: it reaches the journal after the runs queued before it.
        self._files.pass_along(marker)
        if not self._files.running:
            self._files.work()
        if self._thread is None or not self._thread.is_alive():
            self._drain()
        return marker.done.wait(timeout_s) and marker.written

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush, stop the thread and close the journal. False when records are left unwritten
        (`pending_count` says how many)."""
        flushed = self.flush(timeout_s)
        self._files.stop(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._drain_lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._index.close()
            if self._lock is not None and flushed:
                # Everything is written: there is nothing left for recovery to look at.
                self._lock.release(remove=True)
                self._lock = None
        return flushed

    @property
    def pending_count(self) -> int:
        """Records queued and not yet written (flush markers aside)."""
        queued = sum(not isinstance(item, _FlushMarker) for item in self._queued())
        return queued + len(self._files)

    def _append(self, item: _Item) -> None:
        self._enqueue(item)
        if isinstance(item, _FlushMarker | RunFilesWritten):
            self._wake.set()

    def _enqueue(self, *items: _Item) -> None:
        # Under the queue's lock: the writer iterates the queue (a deque iterated while
        # another thread appends raises "deque mutated during iteration").
        with self._queue_lock:
            self._pending.extend(items)
            for _ in range(len(self._pending) - self.max_pending):
                self._drop_oldest()

    def _queued(self, limit: int | None = None) -> list[_Item]:
        """A snapshot of the queue's first `limit` items (all by default)."""
        with self._queue_lock:
            return list(itertools.islice(self._pending, limit))

    def _drop_oldest(self) -> None:
        # Keep the session header and run jobs. Progress slices go first: they only insure
        # against a crash, and the run's close carries all they hold. Then plain cells. The
        # item at the front may be being written: it stays.
        for index, item in enumerate(self._pending):
            if index and isinstance(item, _Progress):
                del self._pending[index]
                self.notices.warn(
                    "store-dropped-progress",
                    "store unwritable for long; dropping crash checkpoints of running cells "
                    "(each run is still saved when it ends)",
                )
                return
        for index, item in enumerate(self._pending):
            if index and isinstance(item, _Opened | ClosedCell):
                del self._pending[index]
                self.notices.warn(
                    "store-dropped",
                    "store unwritable for long; dropping the oldest cell records "
                    f"(kept the last {self.max_pending})",
                )
                return

    # -- writer thread ----------------------------------------------------------------------

    def _claim_session(self) -> None:
        """Take this session's lock before anything is journaled (retried on first write if
        the store is unwritable now)."""
        if self._resumed or self._lock is not None:
            return
        from jupyter_prov4ml.store.session_lock import SessionLock

        with contextlib.suppress(OSError):
            session_dir = self.store.session_dir(self.session.session_id)
            self._lock = SessionLock.hold(session_dir, self.store.modes)

    def _recover_crashed(self) -> None:
        """Finalise the runs of kernels that died on this store (once, at start-up)."""
        if self._resumed or self._recover is None:
            return
        try:
            recovered = self._recover(self.store, self.notices)
        except Exception as error:  # noqa: BLE001 - recovery must never cost this session
            self.notices.warn("recovery", f"could not recover crashed runs ({error!r})")
            return
        if recovered:
            self.notices.warn("recovered", recovered.describe())

    def _run(self) -> None:
        self._claim_session()
        self._recover_crashed()
        while not self._stop.is_set():
            # Woken by the period, not by a run or a flush: plain cells, written patiently.
            patient = not self._wake.wait(self.period_s)
            self._wake.clear()
            if patient and (self._pending or (self._cells is not None and self._cells.unsettled)):
                # Settling and writing take the GIL: in a moment when no cell runs.
                self._await_quiet()
            self._feed()
            self._drain_guarded(patient)
        self._drain_guarded()

    def _await_quiet(self) -> bool:
        """Wait, at most QUIET_WAIT_S, for a moment when no cell runs and none has just ended.

        Writing takes the GIL: done while a cell runs, or while the kernel sends the reply
        of one that just ended, it delays them (and costs the writer more CPU, the two
        threads handing the GIL back and forth). Between a notebook's cells the kernel is
        idle for milliseconds, which is when this writes; a cell that runs long is written
        beside after the wait. True when a quiet moment came, False when it did not (or
        something urgent did: a run, a flush)."""
        deadline = time.monotonic() + QUIET_WAIT_S
        poll_s = QUIET_POLL_S  # doubled each time: a long cell is looked at a few times only
        while not self._stop.is_set():
            cells = self._cells
            if cells is None or (
                cells.running is None
                and time.perf_counter_ns() - cells.ended_perf_ns >= REPLY_GRACE_NS
            ):
                return True
            if time.monotonic() >= deadline or self._wake.wait(poll_s):
                return False
            poll_s *= 2
        return False

    def _feed(self) -> None:
        if self._cells is None:
            return
        try:
            self._cells.settle()
        except Exception as error:  # noqa: BLE001 - as in `_drain_guarded`
            self.notices.warn("writer-bug", f"the store writer hit a bug ({error!r}); retrying")

    def _drain_guarded(self, patient: bool = False) -> None:
        # A bug of ours must not end the thread: records would pile up unwritten, unseen.
        try:
            self._drain(patient)
        except Exception as error:  # noqa: BLE001 - said once; the next drain retries
            self.notices.warn("writer-bug", f"the store writer hit a bug ({error!r}); retrying")

    def _drain(self, patient: bool = False) -> None:
        """Write what is queued; `patient`: in small batches, each in a quiet moment."""
        with self._drain_lock:
            try:
                self._journal_long_running_cell()
                self._write_pending(patient)
                self._sync_index(force=False)
            except OSError as error:
                self._on_failure(error)
                return
            if self._failing:
                self._failing = False
                self.notices.reset(_NOTICE_KEY)
                self.notices.warn("store-recovered", f"store {self.store.root} is writable again")

    def _journal_long_running_cell(self) -> None:
        """The open line of the plain cell running now, once it has run a writer period."""
        cells = self._cells
        if cells is None:
            return
        started = cells.running
        if (
            started is None
            or started.sequence == self._journaled_sequence
            or time.time() - started.started_unix_s < self.period_s
        ):
            return
        self._journaled_sequence = started.sequence  # once, whatever happens next
        window = cells.window_of(started)
        if window.run_id in self._opened_runs:  # a %%provrun: its own open line stands
            return
        lines = self._open_lines(_Opened(window, "cell", None))
        if lines:
            self._journal_for(lines[0]).append(lines)

    def _write_pending(self, patient: bool = False) -> None:
        """Write the queue out in batches; raises OSError with the unwritten items queued.

        The one place items leave the queue: after the journal lines they make are written
        (`JournalFile.append` returns only then); what they do beyond their lines (index
        rows, waking a flush) happens after that."""
        if self._pending and self._journal is not None and self._journal.removed:
            self._journal_removed()
        batch_items = _PATIENT_BATCH_ITEMS if patient else _BATCH_ITEMS
        first = True  # the writer's pass looked for a quiet moment before the first batch
        while self._pending:
            if patient and not first:
                self._await_quiet()
            first = False
            taken: list[_Item] = []
            lines: list[str] = []
            # What each item does once written (a plain cell: its index row), with the bytes
            # of its lines.
            after: list[tuple[_Done | tuple[Any, ...], int]] = []
            size = 0
            for item in self._queued(batch_items):
                if isinstance(item, ClosedCell):  # most items: their own short way
                    taken.append(item)
                    try:
                        line, row = self._cell_line(item)
                    except Exception as error:  # noqa: BLE001 - as below
                        after.append((self._given_up(item, error), 0))
                        continue
                    lines.append(line)
                    after.append((row, len(line)))
                    size += len(line)
                    if size >= _BATCH_BYTES:
                        break
                    continue
                try:
                    item_lines, done = self._lines_of(item)
                # A record we cannot encode is our bug, not the store's: drop that one
                # record, say so once, and keep writing the others.
                except Exception as error:  # noqa: BLE001
                    item_lines, done = [], self._given_up(item, error)
                taken.append(item)
                lines += item_lines
                # Journal lines are ASCII (json.dumps escapes the rest): characters are bytes.
                item_size = sum(map(len, item_lines))
                after.append((done, item_size))
                size += item_size
                if isinstance(item, _FlushMarker) or size >= _BATCH_BYTES:
                    break  # a marker waits for what is before it, written
            offset = 0
            if lines:
                try:
                    journal = self._journal_for(lines[0])
                    offset = journal.size
                    journal.append(lines)
                except OSError:
                    if len(taken) == 1:
                        raise
                    # Nothing of the batch was added: go one item at a time, so that what
                    # fits in the space left is written.
                    batch_items = 1
                    continue
            self._dequeue(taken)
            for then, item_size in after:
                if isinstance(then, tuple):
                    # Looked up for each row: a flush marker before it may have committed
                    # the batch there was.
                    self._index.batch().add_cell(*then, offset)
                else:
                    then(offset)
                offset += item_size

    def _dequeue(self, written: list[_Item]) -> None:
        with self._queue_lock:
            for item in written:
                if self._pending and self._pending[0] is item:
                    self._pending.popleft()
                else:  # not expected: only `_drop_oldest` removes, and never the front
                    with contextlib.suppress(ValueError):
                        self._pending.remove(item)
        closes = sum(isinstance(item, _Announce) for item in written)
        if closes:
            self._settle(closes)

    def _settle(self, closes: int) -> None:
        with self._settled:
            self._closes_settled += closes
            self._settled.notify_all()

    def _journal_for(self, first_line: str) -> JournalFile:
        """The journal, opened (and headed by the session line when new) on first use."""
        if self._journal is None:
            self._open_journal(first_line.startswith('{"event":"session"'))
            assert self._journal is not None
        return self._journal

    def _journal_removed(self) -> None:
        """Our journal was deleted (the store or session folder removed under us): start a
        new one, headed by the session line, instead of writing into a file nobody sees."""
        if self._journal is not None:
            self._journal.close()
        self._journal = None
        if self._lock is not None:
            self._lock.release(remove=False)
            self._lock = None
        self.notices.warn(
            "store-removed",
            f"the provenance store's files under {self.store.root} were removed; "
            "recording from now on into new ones",
        )

    def _given_up(self, item: _Item, error: Exception) -> _Done:
        def done(offset: int) -> None:
            if isinstance(item, _FlushMarker):
                item.done.set()
            self.notices.warn("writer-bug", f"could not save a record ({error!r}); it was skipped")

        return done

    def _on_failure(self, error: OSError) -> None:
        self._failing = True
        with self._settled:
            self._settled.notify_all()  # nobody waits for a close the store cannot take
        self._index.write_failed()
        self.notices.reset("store-recovered")
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        # Whoever waits on a flush hears now that it could not be done, not in 10 s.
        with self._queue_lock:
            markers = [item for item in self._pending if isinstance(item, _FlushMarker)]
            for marker in markers:
                self._pending.remove(marker)
        for marker in markers:
            marker.done.set()
        self.notices.warn(
            _NOTICE_KEY,
            f"cannot write provenance to {self.store.root} ({error.strerror or error}); "
            f"keeping {self.pending_count} record(s) in memory and retrying",
        )

    def _lines_of(self, item: _OtherItem) -> tuple[list[str], _Done]:
        """The journal lines of one item other than a plain cell (`_write_pending` takes
        those its own short way; encoding only: runs' files are made in `RunFiles`), and
        what to do once they are written."""
        if isinstance(item, _Line):
            line = encode_line(item.event, item.payload)
            if item.event == "session":
                session_json = json.dumps(item.payload["session"])
                return [line], lambda _: setattr(self._index.batch(), "session_json", session_json)
            return [line], _nothing
        if isinstance(item, _Progress):
            # A slice may carry a parameter that is NaN: strict JSON needs it as text.
            return [encode_line("progress", jsonable(progress_to_dict(item.piece)))], _nothing
        if isinstance(item, _Opened):
            return self._open_lines(item), _nothing
        if isinstance(item, RunFilesWritten):
            return self._run_close(item.run, item.prov_path)
        if isinstance(item, _Announce):
            return self._run_close(item.run, None)
        return [], lambda _: self._marker_reached(item)

    def _cell_line(self, cell: ClosedCell) -> tuple[str, tuple[Any, ...]]:
        """A plain cell's compact line and index row (without its offset): the writer's
        per-cell work. The hook left the source as it ran: it is hashed and redacted here."""
        session_id = self.session.session_id
        sha256 = cell.sha256 if cell.sha256 is not None else source_sha256(cell.source)
        line = encode_entry(cell_entry(cell, session_id, redact_source(cell.source), sha256))
        row = (
            cell.run_id,
            session_id,
            session_id,
            sha256,
            cell.cell_id,
            cell.execution_count,
            self.session.notebook_path,
            cell.status,
            cell.error_type,
            cell.started_unix_s,
            cell.wall_ns / 1e9,
            cell.cpu_ns / 1e9,
        )
        return line, row

    def _run_close(self, run: CellRun, prov_path: str | None) -> tuple[list[str], _Done]:
        """A run's record: when it ends (no document yet), and again once its files are."""
        record = run_to_dict(run)
        payload = {"run": record} if prov_path is None else {"run": record, "prov_path": prov_path}
        line = encode_line("close", payload)
        session_id = self.session.session_id
        return [line], lambda _: self._index.batch().add_close(session_id, record, prov_path, line)

    def _open_lines(self, item: _Opened) -> list[str]:
        window = item.window
        # Its close is already queued behind it: an open line would only cost space.
        if window.closed:
            return []
        return [
            encode_line(
                "open",
                {
                    "run_id": window.run_id,
                    "kind": item.kind,
                    "cell_sha256": window.sha256,
                    "cell_id": window.cell_id,
                    "started_at_unix_s": window.started_unix_s,
                    "source": window.stored_source(),
                    "notebook_path": self.session.notebook_path,
                    **jsonable(item.details or {}),
                },
            )
        ]

    def _marker_reached(self, marker: _FlushMarker) -> None:
        """Everything queued before the marker is in the journal: index what came before
        (whoever waits may list runs next), and say so."""
        try:
            self._sync_index(force=True)
            marker.written = True
        finally:
            marker.done.set()

    def _open_journal(self, starts_with_session: bool) -> None:
        self._claim_session()
        journal = JournalFile(self.store.journal_path(self.session.session_id), self.store.modes)
        if journal.size == 0:
            if self._journal_begun:
                self._index.journal_restarted()  # ours was removed under us
            if not starts_with_session:  # a journal always starts with its session
                session = session_to_dict(self.session)
                try:
                    journal.append([encode_line("session", {"session": session})])
                except OSError:
                    journal.close()
                    raise
                self._index.batch().session_json = json.dumps(session)
        self._journal = journal
        self._journal_begun = True
        self._index.journal_opened(journal.size)

    def _sync_index(self, force: bool = True) -> None:
        """Index what was journaled: at most every INDEX_PERIOD_S unless forced (a flush;
        readers catch up from the journal meanwhile), so a cell's close costs no SQLite
        commit of its own: a commit costs ~1.2 ms, 10 µs a cell at the writer's period."""
        now = time.monotonic()
        if self._journal is None or (not force and now - self._last_index_sync < INDEX_PERIOD_S):
            return
        self._last_index_sync = now
        self._index.sync(self._journal.size)


def _nothing(offset: int) -> None:
    return None
