"""Cell events → CellRun records. Runs on every cell, so it does the least it can:
hash the source, read two clocks, append to a deque. No psutil, no file I/O (see
shared/notes/performance.md: this path costs ~10 µs; a psutil call would cost 0.1–1 ms)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from .identity import front_end_cell_id, source_sha256
from .records import CellRef, CellRun, EnergyLedger, HardwareSummary, Param, RunKind, Status


class RecordSink(Protocol):
    def opened(
        self, run_id: str, kind: str, sha256: str, cell_id: str | None, started: float
    ) -> None: ...

    def closed(self, run: CellRun) -> None: ...


@dataclass(slots=True)
class OpenWindow:
    """A cell that has started and not yet ended."""

    run_id: str
    source: str
    sha256: str
    cell_id: str | None
    started_unix_s: float
    started_perf_ns: int
    started_cpu_ns: int
    closed: bool = False


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
    """Opens a window at `pre_run_cell` and closes it into a CellRun at `post_run_cell`.

    Nested events (a cell that runs code with `shell.run_cell`, as `%%provrun` does) are
    ignored by depth, so one executed cell gives one record.
    """

    def __init__(self, session_id: str, sink: RecordSink, notebook_path: str | None) -> None:
        self.session_id = session_id
        self.notebook_path = notebook_path
        self._sink = sink
        self._depth = 0
        self._sequence = 0
        self.current: OpenWindow | None = None

    def begin(self, info: Any) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        window = self._open(info.raw_cell or "", front_end_cell_id(info))
        self.current = window
        self._sink.opened(
            window.run_id, "cell", window.sha256, window.cell_id, window.started_unix_s
        )

    def open_detached(self, source: str) -> OpenWindow:
        """A window for code run outside the cell hooks (a magic called programmatically)."""
        return self._open(source, None)

    def _open(self, source: str, cell_id: str | None) -> OpenWindow:
        self._sequence += 1
        return OpenWindow(
            run_id=f"{self.session_id}-{self._sequence:05d}",
            source=source,
            sha256=source_sha256(source),
            cell_id=cell_id,
            started_unix_s=time.time(),
            started_perf_ns=time.perf_counter_ns(),
            started_cpu_ns=time.process_time_ns(),
        )

    def end(self, result: Any) -> CellRun | None:
        if self._depth == 0:
            # The cell that loaded us gets a post event with no pre event.
            return None
        self._depth -= 1
        if self._depth:
            return None
        window, self.current = self.current, None
        if window is None or window.closed:
            return None
        status, error_type = status_of(result_error(result))
        run = self.close(
            window, "cell", status, error_type, getattr(result, "execution_count", None)
        )
        self._sink.closed(run)
        return run

    def rebind(self, sink: RecordSink) -> None:
        """Send later records to `sink` (the store changed)."""
        self._sink = sink

    def reset_depth(self) -> None:
        """Forget unmatched events (after an error inside our own hooks)."""
        self._depth = 0
        self.current = None

    def close(
        self,
        window: OpenWindow,
        kind: RunKind,
        status: Status,
        error_type: str | None,
        execution_count: int | None,
        *,
        name: str | None = None,
        params: tuple[Param, ...] = (),
        hardware: HardwareSummary | None = None,
        energy: EnergyLedger | None = None,
    ) -> CellRun:
        """Turn `window` into a record (once)."""
        end_perf_ns = time.perf_counter_ns()
        end_cpu_ns = time.process_time_ns()
        window.closed = True
        wall_s = (end_perf_ns - window.started_perf_ns) / 1e9
        return CellRun(
            run_id=window.run_id,
            session_id=self.session_id,
            kind=kind,
            cell=CellRef(
                sha256=window.sha256,
                source=window.source,
                cell_id=window.cell_id,
                execution_count=execution_count,
                notebook_path=self.notebook_path,
            ),
            started_at_unix_s=window.started_unix_s,
            ended_at_unix_s=window.started_unix_s + wall_s,
            wall_time_s=wall_s,
            cpu_time_s=(end_cpu_ns - window.started_cpu_ns) / 1e9,
            status=status,
            error_type=error_type,
            name=name,
            params=params,
            hardware=hardware,
            energy=energy,
        )
