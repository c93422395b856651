"""Cell events → CellRun records. Runs on every cell, so it does the least it can: read the
clocks, keep the source (the store writer hashes and redacts it), read what the cell bound,
and append a tuple of atoms. No psutil, no file I/O (see shared/notes/performance.md: a psutil
call would cost 0.1–1 ms).

A plain cell's lineage is recorded later, in a batch (`Recorder.settle`): code run once per
cell between the kernel's own work runs cold, at several times the cost of the same code run
for 32 cells in a row (measured in a kernel: the hooks' CPU per trivial cell fell by a quarter
to a third). What
must be read as the cell ended is read in its hook (`bound_values`); the batch is settled
every `SETTLE_BATCH` cells, before anything reads the lineage or records a run, and by the
store writer before it writes (so a paused notebook's last cells are written within its
period)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from jupyter_prov4ml.capture.run_capture import RunCapture, RunSeries, StepContext, finish_steps
from jupyter_prov4ml.identity import cell_version, front_end_cell_id, source_sha256, version_sha256
from jupyter_prov4ml.lineage.dataflow import NO_DATAFLOW, CellTreeCapture, DataflowCache
from jupyter_prov4ml.lineage.links import BoundValue, Lineage, Links, VariableFacts, bound_values
from jupyter_prov4ml.records import CellRef, CellRun, RunKind, Status
from jupyter_prov4ml.redaction import redact_source
from jupyter_prov4ml.settings import EnergyConfig


class RecordSink(Protocol):
    def closed_cell(self, cell: ClosedCell) -> None: ...

    def closed_cells(self, cells: list[ClosedCell]) -> None: ...

    def submit_run(self, run: CellRun, series: RunSeries) -> Future[Any]: ...


@dataclass(slots=True)
class OpenWindow:
    """A cell that has started and not yet ended (made only when something asks for it: the
    API, %%provrun; see `Recorder.current`)."""

    run_id: str
    source: str
    # The source's SHA-256, or None to hash it when first asked (`sha256`).
    _sha256: str | None
    cell_id: str | None
    started_unix_s: float
    started_perf_ns: int
    started_cpu_ns: int
    closed: bool = False
    # Created on the first API call (log_metric, track, ...) made while this cell runs.
    capture: RunCapture | None = None
    # The source as stored (credentials redacted): made once, in the writer thread.
    _stored_source: str | None = None

    @property
    def sha256(self) -> str:
        """The SHA-256 of the source, hashed once."""
        if self._sha256 is None:
            self._sha256 = source_sha256(self.source)
        return self._sha256

    @property
    def known_sha256(self) -> str | None:
        """The source's SHA-256 if already hashed, else None."""
        return self._sha256

    def stored_source(self) -> str:
        """The source as the store keeps it, redacted once however often it is written."""
        if self._stored_source is None:
            self._stored_source = redact_source(self.source)
        return self._stored_source


class StartedCell(NamedTuple):
    """A top-level cell that started, as its hook saw it: its window is made only when
    something asks for it (`Recorder.current`); most cells are recorded from this alone."""

    sequence: int
    source: str
    cell_id: str | None
    started_unix_s: float
    started_perf_ns: int
    started_cpu_ns: int


_NO_LINKS = ((), (), (), None)  # ClosedCell's lineage fields when none were found

# Plain cells whose lineage waits to be recorded in one batch (see the module docstring).
SETTLE_BATCH = 32


class ClosedCell(NamedTuple):
    """A plain cell that ended, with its lineage: the raw facts, turned into a record by the
    store writer (which hashes and redacts the source, off the cell's path).

    Only strings, numbers and plain tuples of them: it waits in the writer's queue for up to
    a writer period, and objects that wait there survive the kernel's young garbage
    collections. A window or dataclass held here (7 objects a cell) was promoted to the
    oldest generation and made the kernel's full collections (~30 ms each) several times as
    frequent; plain tuples of atoms leave the collector's lists at its first pass."""

    run_id: str
    source: str  # as the cell ran: redacted by the writer, off the cell's path
    sha256: str | None  # None: the writer hashes `source`, off the cell's path
    cell_id: str | None
    started_unix_s: float
    wall_ns: int
    cpu_ns: int
    status: Status
    error_type: str | None
    execution_count: int | None
    reads: tuple[str, ...] = ()
    variables: tuple[VariableFacts, ...] = ()
    informed_by: tuple[tuple[str, tuple[str, ...]], ...] = ()
    derived_from_sha256: str | None = None

    @classmethod
    def of(
        cls,
        window: OpenWindow,
        ended_perf_ns: int,
        ended_cpu_ns: int,
        status: Status,
        error_type: str | None,
        execution_count: int | None,
        links: Links | None = None,
    ) -> ClosedCell:
        """The facts of `window`, ended at these clock readings, with its lineage."""
        # The tuple made directly: the generated `__new__` is one more call on every cell.
        return tuple.__new__(
            cls,
            (
                window.run_id,
                window.source,
                window.known_sha256,
                window.cell_id,
                window.started_unix_s,
                ended_perf_ns - window.started_perf_ns,
                ended_cpu_ns - window.started_cpu_ns,
                status,
                error_type,
                execution_count,
                *(links if links is not None else _NO_LINKS),
            ),
        )


class _Unsettled(NamedTuple):
    """A plain cell that ended, its record and lineage not yet made: what its hooks read
    (atoms and tuples: see ClosedCell on the collector)."""

    started: StartedCell
    wall_ns: int
    cpu_ns: int
    status: Status
    error_type: str | None
    execution_count: int | None
    reads: frozenset[str]
    deletes: frozenset[str]
    bound: tuple[BoundValue, ...] | None  # None: no lineage (none asked, or it failed)


def link_fields(links: Links | None) -> dict[str, Any]:
    """A record's lineage fields."""
    if links is None:
        return {}
    return {
        "reads": links.reads,
        "variables": links.summaries(),
        "informed_by": links.informed_by,
        "derived_from_sha256": links.derived_from_sha256,
    }


def build_run(
    session_id: str,
    notebook_path: str | None,
    window: OpenWindow,
    ended_perf_ns: int,
    ended_cpu_ns: int,
    kind: RunKind,
    status: Status,
    error_type: str | None,
    execution_count: int | None,
    **details: Any,
) -> CellRun:
    """The record of a window that ended at the given clock readings."""
    return make_run(
        window.run_id,
        session_id,
        kind,
        CellRef(
            window.sha256, window.stored_source(), window.cell_id, execution_count, notebook_path
        ),
        window.started_unix_s,
        (ended_perf_ns - window.started_perf_ns) / 1e9,
        (ended_cpu_ns - window.started_cpu_ns) / 1e9,
        status,
        error_type,
        **details,
    )


def make_run(
    run_id: str,
    session_id: str,
    kind: RunKind,
    cell: CellRef,
    started_unix_s: float,
    wall_time_s: float,
    cpu_time_s: float,
    status: Status,
    error_type: str | None,
    **details: Any,
) -> CellRun:
    """The one place a run's record is made (from a cell's clocks by `build_run`, from a
    dead kernel's journal by recovery); `cell.source` is the stored, redacted source."""
    return CellRun(
        run_id=run_id,
        session_id=session_id,
        kind=kind,
        cell=cell,
        started_at_unix_s=started_unix_s,
        ended_at_unix_s=started_unix_s + wall_time_s,
        wall_time_s=wall_time_s,
        cpu_time_s=cpu_time_s,
        status=status,
        error_type=error_type,
        **details,
    )


def status_of(error: BaseException | None) -> tuple[Status, str | None]:
    """`ok`, `interrupted` (KeyboardInterrupt: the kernel was interrupted) or `failed`."""
    if error is None:
        return "ok", None
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt"
    return "failed", type(error).__name__


def result_error(result: Any) -> BaseException | None:
    """The exception an `ExecutionResult` carries, before or during execution."""
    error = getattr(result, "error_before_exec", None)
    return error if error is not None else getattr(result, "error_in_exec", None)


class Recorder:
    """Notes a cell's start at `pre_run_cell` and its end at `post_run_cell`: a plain cell's
    record is made in a batch (`settle`), a cell that used the API is saved as a run.

    Nested events (a cell that runs code with `shell.run_cell`, as `%%provrun` does) are
    ignored by depth, so one executed cell gives one record.
    """

    def __init__(
        self,
        session_id: str,
        sink: RecordSink,
        notebook_path: str | None,
        energy_config: EnergyConfig,
        namespace: Mapping[str, Any] | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.energy_config = energy_config
        # Lineage needs the user's namespace (to see what a cell bound); without one, cells
        # are recorded without it.
        self.namespace = namespace
        self.dataflow = DataflowCache()
        # Cells are known by `cell_version` here (their source, when short): hashed only
        # for output. Read through `lineage`, which records the batch waiting first.
        self._lineage = Lineage(version_sha256)
        # Plain cells that ended, in order, their lineage not yet recorded: appended by the
        # cell hook (main thread), taken by `settle` (any thread, one at a time).
        self._unsettled: deque[_Unsettled] = deque()
        self._settling = threading.Lock()
        self.settle_batch = SETTLE_BATCH
        # Attached to the shell's compiler by the extension: keeps the tree IPython parsed for
        # the cell, so that a new cell's analysis need not parse it again.
        self.trees = CellTreeCapture()
        self._on_error = on_error
        self.notebook_path = notebook_path
        self._sink = sink
        self._depth = 0
        self._sequence = 0
        # The top-level cell running now (read by the store writer too: a quiet moment, a
        # long cell's open line), and its window once asked for (or a detached window).
        self.running: StartedCell | None = None
        self._window: OpenWindow | None = None
        # When the last top-level cell ended (perf_counter_ns): its reply is on its way.
        self.ended_perf_ns = 0

    @property
    def current(self) -> OpenWindow | None:
        """The running cell's window, made on first ask (the API, %%provrun)."""
        window = self._window
        if window is None and (started := self.running) is not None:
            window = self._window = self.window_of(started)
        return window

    @current.setter
    def current(self, window: OpenWindow | None) -> None:
        self._window = window

    def window_of(self, started: StartedCell) -> OpenWindow:
        """A window for `started` (the writer makes its own, for a long cell's open line)."""
        return OpenWindow(
            self._run_id(started.sequence),
            started.source,
            None,
            started.cell_id,
            started.started_unix_s,
            started.started_perf_ns,
            started.started_cpu_ns,
        )

    def _run_id(self, sequence: int) -> str:
        return f"{self.session_id}-{sequence:05d}"

    def begin(self, info: Any) -> None:
        # Every cell's hook: no hashing, no I/O, one tuple (see the module docstring); the
        # writer hashes and redacts the source.
        self._depth += 1
        if self._depth > 1:
            return
        self._sequence += 1
        # The tree IPython parses next is kept even for a cell analysed before: one
        # reference, dropped when the cell ends, costs less than asking.
        self.trees.clear()
        self._window = None
        self.running = tuple.__new__(
            StartedCell,
            (
                self._sequence,
                info.raw_cell or "",
                front_end_cell_id(info),
                time.time(),
                time.perf_counter_ns(),
                time.process_time_ns(),
            ),
        )

    def open_detached(self, source: str) -> OpenWindow:
        """A window for code run outside the cell hooks (a magic called programmatically)."""
        return self._open(source, None)

    def _open(self, source: str, cell_id: str | None) -> OpenWindow:
        self._sequence += 1
        return OpenWindow(
            self._run_id(self._sequence),
            source,
            None,
            cell_id,
            time.time(),
            time.perf_counter_ns(),
            time.process_time_ns(),
        )

    def end(self, result: Any) -> None:
        if self._depth == 0:
            # The cell that loaded us gets a post event with no pre event.
            return
        self._depth -= 1
        if self._depth:
            return
        ended_perf_ns = time.perf_counter_ns()
        ended_cpu_ns = time.process_time_ns()
        started, self.running = self.running, None
        window, self._window = self._window, None
        self.ended_perf_ns = ended_perf_ns
        error = result_error(result)
        status, error_type = ("ok", None) if error is None else status_of(error)
        count = getattr(result, "execution_count", None)
        if window is None:  # nothing asked for the cell's window: most cells
            if started is not None:
                self._ended_plain(started, ended_perf_ns, ended_cpu_ns, status, error_type, count)
            return
        if window.closed:  # %%provrun closed it
            return
        window.closed = True
        links = self.link(window, count, error is None)
        capture = window.capture
        if capture is not None:
            status, error_type = capture.outcome(status, error_type)
        if capture is None or capture.is_empty():
            self._sink.closed_cell(
                ClosedCell.of(window, ended_perf_ns, ended_cpu_ns, status, error_type, count, links)
            )
            return
        # A plain cell that used the API (metrics, a tracked loop) is saved like a full run,
        # without hardware samples: its steps get CPU-time energy estimates only.
        steps = finish_steps(
            capture, StepContext(None, window.started_perf_ns, 0, self.energy_config)
        )
        run = build_run(
            self.session_id,
            self.notebook_path,
            window,
            ended_perf_ns,
            ended_cpu_ns,
            "cell",
            status,
            error_type,
            count,
            params=tuple(capture.params),
            steps=steps.documented,
            steps_total=steps.total,
            loops=steps.loops,
            artifacts=tuple(capture.artifacts),
            models=tuple(capture.models),
            inputs=tuple(capture.inputs),
            **link_fields(links),
        )
        self._sink.submit_run(
            run, RunSeries(capture.metrics, None, steps.raw, self.energy_config.watts_per_core)
        )

    def _ended_plain(
        self,
        started: StartedCell,
        ended_perf_ns: int,
        ended_cpu_ns: int,
        status: Status,
        error_type: str | None,
        execution_count: int | None,
    ) -> None:
        """A plain cell ended: read what it bound now, make its record in a batch."""
        reads = deletes = NO_DATAFLOW.reads
        bound: tuple[BoundValue, ...] | None = None
        if self.namespace is not None:
            try:
                flow = self.dataflow.of_cell(started.source, self.trees.take()) or NO_DATAFLOW
                bound = bound_values(flow.binds, self.namespace)
                reads, deletes = flow.reads, flow.deletes
            # Lineage is an addition to the record: if it fails, the cell is still recorded.
            except Exception as error:  # noqa: BLE001
                self._lineage_failed(error)
        unsettled = self._unsettled
        unsettled.append(
            tuple.__new__(
                _Unsettled,
                (
                    started,
                    ended_perf_ns - started.started_perf_ns,
                    ended_cpu_ns - started.started_cpu_ns,
                    status,
                    error_type,
                    execution_count,
                    reads,
                    deletes,
                    bound,
                ),
            )
        )
        if len(unsettled) >= self.settle_batch:
            self.settle(wait=False)  # a thread settling now takes these too

    def settle(self, wait: bool = True) -> None:
        """Record the lineage of the plain cells that ended since the last call, in the order
        they ran, and hand their records to the sink. `wait` False: return at once when
        another thread is settling."""
        if not self._unsettled:
            return
        if not self._settling.acquire(blocking=wait):
            return
        try:
            self._settle_locked()
        finally:
            self._settling.release()

    @property
    def unsettled(self) -> int:
        """How many ended cells wait for `settle`."""
        return len(self._unsettled)

    @property
    def lineage(self) -> Lineage:
        """The session's lineage, with every cell that has ended recorded in it."""
        self.settle()
        return self._lineage

    def _settle_locked(self) -> None:
        unsettled, record = self._unsettled, self._lineage.record
        cells: list[ClosedCell] = []
        # Taken off once handed over: an interrupt before that leaves them for the next call.
        for started, wall_ns, cpu_ns, status, error_type, count, reads, deletes, bound in list(
            unsettled
        ):
            run_id = self._run_id(started.sequence)
            links: tuple[Any, ...] = _NO_LINKS
            if bound is not None:
                try:
                    links = record(
                        run_id,
                        started.cell_id,
                        cell_version(started.source),
                        count,
                        reads,
                        bound,
                        deletes,
                        status == "ok",
                    )
                except Exception as error:  # noqa: BLE001 - as in `_ended_plain`
                    self._lineage_failed(error)
            cells.append(
                tuple.__new__(
                    ClosedCell,
                    (
                        run_id,
                        started.source,
                        None,
                        started.cell_id,
                        started.started_unix_s,
                        wall_ns,
                        cpu_ns,
                        status,
                        error_type,
                        count,
                        *links,
                    ),
                )
            )
        self._sink.closed_cells(cells)
        for _ in cells:
            unsettled.popleft()

    def link(
        self, window: OpenWindow, execution_count: int | None, succeeded: bool
    ) -> Links | None:
        """Lineage of an execution that just ended: what it read from whom, what it bound
        (after the cells that ended before it)."""
        with self._settling:
            self._settle_locked()
            if self.namespace is None:
                return None
            try:
                source = window.source
                flow = self.dataflow.of_cell(source, self.trees.take()) or NO_DATAFLOW
                return self._lineage.record(
                    window.run_id,
                    window.cell_id,
                    cell_version(source),
                    execution_count,
                    flow.reads,
                    bound_values(flow.binds, self.namespace),
                    flow.deletes,
                    succeeded,
                )
            except Exception as error:  # noqa: BLE001 - as in `_ended_plain`
                self._lineage_failed(error)
                return None

    def _lineage_failed(self, error: Exception) -> None:
        if self._on_error is not None:
            self._on_error("lineage", error)

    @contextlib.contextmanager
    def detached(self, window: OpenWindow) -> Iterator[None]:
        """Make `window` current while a magic called outside the cell hooks runs code;
        the cell events that code fires are nested ones, so they are ignored."""
        saved = self.current, self._depth
        self.current, self._depth = window, self._depth + 1
        try:
            yield
        finally:
            self.current, self._depth = saved

    def rebind(self, sink: RecordSink) -> None:
        """Send later records to `sink` (the store changed); those waiting go to the old one."""
        self.settle()
        self._sink = sink

    def reset_depth(self) -> None:
        """Forget unmatched events (after an error inside our own hooks)."""
        self._depth = 0
        self.running = None
        self._window = None

    def close(
        self,
        window: OpenWindow,
        kind: RunKind,
        status: Status,
        error_type: str | None,
        execution_count: int | None,
        **details: Any,
    ) -> CellRun:
        """Turn `window` into a record now (once): used by %%provrun, on the main thread."""
        ended_perf_ns = time.perf_counter_ns()
        ended_cpu_ns = time.process_time_ns()
        window.closed = True
        return build_run(
            self.session_id,
            self.notebook_path,
            window,
            ended_perf_ns,
            ended_cpu_ns,
            kind,
            status,
            error_type,
            execution_count,
            **details,
        )
