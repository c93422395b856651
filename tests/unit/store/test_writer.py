"""The store writer's contract: after `flush()` returns True, everything submitted before it
is on disk and readable; plain cells are journaled in the same shape as full records."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs
from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow, Recorder, build_run
from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import SessionInfo
from jupyter_prov4ml.settings import EnergyConfig
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.writer import StoreWriter

SESSION = SessionInfo("s1", "u", 0.0, (("python", "3"),), "h", "p", "cpu", 2, 1, (), "nb.ipynb")


class _Info:
    """What the recorder reads of IPython's ExecutionInfo."""

    def __init__(self, source: str) -> None:
        self.raw_cell, self.cell_id = source, None


class _Result:
    """What the recorder reads of IPython's ExecutionResult."""

    error_before_exec = error_in_exec = None
    execution_count = 1


def _recorder_for(writer: StoreWriter) -> Recorder:
    """A recorder feeding `writer`, as the extension wires them."""
    recorder = Recorder(SESSION.session_id, writer, None, EnergyConfig())
    writer.take_from(recorder)
    return recorder


@contextmanager
def _running_writer(store: Store, period_s: float) -> Iterator[tuple[StoreWriter, Recorder]]:
    """A started writer with its recorder, closed afterwards."""
    writer = StoreWriter(store, SESSION, Notices(), period_s=period_s)
    recorder = _recorder_for(writer)
    writer.start()
    try:
        yield writer, recorder
    finally:
        writer.close()


def _provrun_started(writer: StoreWriter, recorder: Recorder, name: str) -> OpenWindow:
    """A %%provrun cell started as the magic starts one: in the cell's own window, its open
    line journaled."""
    recorder.begin(_Info("%%provrun\nwork()"))
    window = recorder.current
    assert window is not None
    writer.opened(window, "provrun", {"name": name, "params": []})
    return window


def plain_cell(n: int) -> ClosedCell:
    window = OpenWindow(f"s1-{n:05d}", f"x = {n}", "0" * 64, f"id{n}", 100.0 + n, 10**9, 10**8)
    return ClosedCell.of(window, 2 * 10**9, 3 * 10**8, "ok", None, n)


def told_by_next_cells(shell: Any, capsys: Any, text: str, timeout_s: float = 60.0) -> str:
    """Stderr of `pass` cells run until one has told `text` (notices are told by the next
    cell), with what was captured before; the bound is for a writer thread that never runs."""
    err = capsys.readouterr().err
    deadline = time.monotonic() + timeout_s
    while text not in err and time.monotonic() < deadline:
        shell.run_cell("pass")
        err += capsys.readouterr().err
        if text not in err:
            time.sleep(0.01)
    return err


def test_flush_means_readable(tmp_path: Path) -> None:
    """Each flush makes every earlier record readable at once (regression: the marker used to
    be signalled before the journal's buffer reached the OS)."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=0.001)
    writer.start()
    try:
        for n in range(200):
            writer.closed_cell(plain_cell(n))
            assert writer.flush(timeout_s=10)
            state = read_journal(store.journal_path("s1"))
            assert len(state.closed) == n + 1
    finally:
        writer.close()


def test_hand_written_journal_form_matches_the_record(tmp_path: Path) -> None:
    """The fast journal encoding of a plain cell reads back as exactly the record that
    `build_run` makes from the same facts."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices())
    window = OpenWindow("s1-00007", "x = 7", "0" * 64, "id7", 107.0, 10**9, 10**8)
    writer.closed_cell(ClosedCell.of(window, 2 * 10**9, 3 * 10**8, "ok", None, 7))
    assert writer.close()
    ((journaled, _),) = read_journal(store.journal_path("s1")).closed.values()
    expected = build_run("s1", "nb.ipynb", window, 2 * 10**9, 3 * 10**8, "cell", "ok", None, 7)
    assert journaled == expected


def test_plain_cells_cost_one_compact_line_and_read_back_whole(tmp_path: Path) -> None:
    """A plain cell is one compact journal line and one index row that points at it (no copy
    of the line, no PROV file written ahead): every cell reads back whole through the index,
    before and after the index is rebuilt, and its PROV document is made when read."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=60)
    writer.start()
    total = 2_005
    for n in range(total):
        writer.closed_cell(plain_cell(n))
    assert writer.close(timeout_s=30)
    assert not list(store.session_dir("s1").glob("*.prov.json"))
    expected = {
        run_id: run for run_id, (run, _) in read_journal(store.journal_path("s1")).closed.items()
    }
    assert len(expected) == total
    journal_bytes = store.journal_path("s1").stat().st_size
    assert journal_bytes / total < 200
    for rebuilt in (False, True):
        if rebuilt:
            (store.root / "index.sqlite").unlink()
        runs = store.runs()
        assert {stored.run.run_id: stored.run for stored in runs} == expected
        assert store.find("s1-00007").run == expected["s1-00007"]
        document = store.find("s1-02004").document()
        assert any("s1-02004" in str(record.identifier) for record in document.get_records())
    with sqlite3.connect(store.root / "index.sqlite") as connection:
        (copies,) = connection.execute("SELECT COUNT(*) FROM records").fetchone()
    assert copies == 0


def test_unwritable_store_holds_a_bounded_queue_dropping_checkpoints_first(tmp_path: Path) -> None:
    """While the store cannot be written, records wait in memory up to `max_pending`; past
    that, crash checkpoints go first (the run's close holds all they hold), then the oldest
    plain cells, with one warning line; run jobs and the session line are never dropped, and
    everything still queued is written once the store works again."""
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store folder should be")
    store = Store(blocker)
    notices = Notices()
    writer = StoreWriter(store, SESSION, notices, max_pending=50)
    for n in range(20):
        writer.progress({"run_id": "s1-run", "at_unix_s": float(n)})
    for n in range(100):
        writer.closed_cell(plain_cell(n))
    assert not writer.flush(timeout_s=0.5)
    assert writer.pending_count <= 51  # the flush marker rides on top
    messages = notices.drain()
    assert any("cannot write provenance" in m for m in messages)
    assert sum("dropping crash checkpoints" in m for m in messages) == 1
    assert sum("dropping the oldest" in m for m in messages) == 1
    blocker.unlink()
    assert writer.close()
    events = [line for line in store.journal_path("s1").read_text().splitlines()]
    assert not any('"event":"progress"' in line for line in events)
    closed = read_journal(store.journal_path("s1")).closed
    # the newest cells, minus room for the flush markers queued meanwhile
    assert 45 <= len(closed) <= 49
    assert sorted(closed) == [f"s1-{n:05d}" for n in range(100 - len(closed), 100)]


def test_disk_full_holds_records_and_writes_them_later(
    loaded: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """ENOSPC on every write (journal, data files, PROV documents): one warning line naming
    the cause, the cells (a %%provrun with metrics among them) run as usual, and once space is
    back everything is written: journal, data files and the run's document."""
    import errno

    from jupyter_prov4ml.store import run_files as run_files_module
    from jupyter_prov4ml.store import writer as writer_module

    def full(*args: object, **kwargs: object) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    ext = loaded._jupyter_prov4ml
    assert ext.writer.flush()
    ext.writer._journal.close()  # as if the next write is the first since the disk filled
    ext.writer._journal = None
    monkeypatch.setattr(writer_module, "JournalFile", full)
    monkeypatch.setattr(run_files_module, "atomic_write_bytes", full)  # runs' files
    cells = [
        "a = 1",
        "%%provrun --no-graph\nfrom jupyter_prov4ml import log_metric\n"
        "for i in range(50):\n    log_metric('loss', 1 / (i + 1), step=i)",
        "b = a + 1",
    ]
    for cell in cells:
        assert loaded.run_cell(cell, store_history=True).success
    assert not ext.writer.flush(timeout_s=1)
    # The writer's notice follows its failed write, which a flush does not wait for: cells
    # run (each tells what is pending) until it is told.
    err = told_by_next_cells(loaded, capsys, "No space left on device")
    assert err.count("No space left on device") == 1 and "Traceback" not in err
    monkeypatch.undo()
    assert ext.writer.flush(timeout_s=30)
    runs = {r["cell"]["source"]: r for r in closed_runs(store_dir)}
    assert {"a = 1", "b = a + 1", cells[1]} <= set(runs)
    provrun = runs[cells[1]]
    assert provrun["metrics"][0]["count"] == 50
    for data in provrun["data_files"]:
        assert (store_dir / data["relpath"]).stat().st_size == data["size_bytes"]
    assert list(store_dir.glob("sessions/*/runs/*.prov.json"))


def test_records_leave_the_queue_only_once_written(
    loaded: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The disk fills while plain cells run, with the journal open: writes fail part-way
    (ENOSPC after some bytes). No cell of that stretch is lost and no line is torn once space
    is back; `flush` says False while records wait, and `pending_count` how many."""
    import errno
    import os as real_os

    from jupyter_prov4ml.store import journal_file

    ext = loaded._jupyter_prov4ml
    assert ext.writer.flush()
    real_write = real_os.write

    def partial_then_full(fd: int, data: Any) -> int:
        if len(data) > 8:
            real_write(fd, bytes(data[:8]))  # some bytes reach the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_file.os, "write", partial_then_full)
    sources = [f"during_{i} = {i}" for i in range(40)]
    for source in sources:
        assert loaded.run_cell(source, store_history=True).success
    assert not ext.writer.flush(timeout_s=5)
    assert ext.writer.pending_count >= len(sources)
    monkeypatch.undo()
    loaded.run_cell("after = 1", store_history=True)
    assert ext.writer.flush(timeout_s=30)
    assert ext.writer.pending_count == 0
    journal = next(store_dir.glob("sessions/*/journal.jsonl")).read_text()
    for line in journal.splitlines():
        json.loads(line)  # every line whole
    written = {r["cell"]["source"] for r in closed_runs(store_dir)}
    assert set(sources) | {"after = 1"} <= written
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1 and "Traceback" not in err


def test_a_large_run_on_a_nearly_full_disk_is_written_once_space_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300,000-point checkpoint on a disk with 1 MB left: it travels in slices of at most
    20,000 points (no journal line over 1 MB), a failed write leaves nothing behind (so
    retries do not fill the disk), and once 12 MB are free every slice is journaled exactly
    once and the points read back whole; `flush` says False until then."""
    import errno
    from array import array

    from jupyter_prov4ml.capture.progress import Checkpointer, Progress
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware.sampler import SampleColumns
    from jupyter_prov4ml.store import journal_file
    from jupyter_prov4ml.store.codec import progress_from_dict

    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=0.01)
    writer.start()
    assert writer.flush()
    journal = store.journal_path(SESSION.session_id)
    quota = {"limit": journal.stat().st_size + 1_000_000}
    real_write = journal_file.os.write

    def write_within_quota(fd: int, data: Any) -> int:
        room = quota["limit"] - journal_file.os.fstat(fd).st_size
        if len(data) > room:
            if room > 0:
                real_write(fd, bytes(data[:room]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_file.os, "write", write_within_quota)
    capture = RunCapture(0)
    series = capture.metrics
    for step in range(300_000):
        series.log("loss", 1.0 / (step + 1), step, "training")
    sent: list[Any] = []

    def sink(piece: Any) -> None:
        sent.append(piece)
        writer.progress(piece)

    Checkpointer("r1", SampleColumns, capture, sink, 0).checkpoint()
    assert len(sent) == 15
    assert not writer.flush(timeout_s=5)
    assert writer.pending_count > 0
    quota["limit"] = journal.stat().st_size + 12_000_000
    assert writer.flush(timeout_s=60)
    assert writer.close()
    lines = journal.read_text().splitlines()
    progress_lines = [json.loads(line) for line in lines if '"event":"progress"' in line]
    assert len(progress_lines) == 15
    assert max(len(line) for line in lines) < 1_000_000
    progress = Progress()
    for entry in progress_lines:
        progress.add(progress_from_dict(entry))
    assert progress.metrics is not None
    back = progress.metrics.series[("loss", "training")]
    assert back.steps == array("q", range(300_000))
    assert back.values == series.series[("loss", "training")].values


def test_a_long_provrun_keeps_its_own_open_line(tmp_path: Path) -> None:
    """A %%provrun cell that runs past the writer's period: the journal's open line for it
    stays the %%provrun's (kind, name, parameters), never replaced by a plain cell's open
    line, so recovery after a kill finalises it as the run it was."""
    store = Store(tmp_path / "store")
    journal = store.journal_path(SESSION.session_id)
    with _running_writer(store, period_s=0.2) as (writer, recorder):
        window = _provrun_started(writer, recorder, "long")
        assert writer.flush()  # the run's open line, written before the cell is "long"
        while time.time() - window.started_unix_s < 2 * writer.period_s:
            time.sleep(0.05)  # the cell is now older than the writer's period
        assert writer.flush()
        state = read_journal(journal, with_progress=True)
        assert state.open[window.run_id]["kind"] == "provrun"
        assert state.open[window.run_id]["name"] == "long"


def test_a_provrun_cell_running_on_after_its_run_does_not_reopen_it(tmp_path: Path) -> None:
    """A short %%provrun whose cell runs on past the writer's period (showing the run): the
    cell's open line would come after the run's close and reopen it for recovery; none is
    written."""
    store = Store(tmp_path / "store")
    journal = store.journal_path(SESSION.session_id)
    with _running_writer(store, period_s=0.2) as (writer, recorder):
        window = _provrun_started(writer, recorder, "short")
        run = recorder.close(window, "provrun", "ok", None, 1)
        writer.submit_run(run, RunSeries()).result(timeout=60)
        while time.time() - window.started_unix_s < 3 * writer.period_s:
            time.sleep(0.05)  # the cell runs on, past the writer's period
        assert writer.flush()
        state = read_journal(journal, with_progress=True)
        assert window.run_id in state.closed and window.run_id not in state.open


def test_a_long_plain_cell_is_journaled_open_once(tmp_path: Path) -> None:
    """A plain cell that runs past the writer's period gets an open line (so a kill leaves
    it recovered as killed), once; when it ends, its close line follows."""
    store = Store(tmp_path / "store")
    journal = store.journal_path(SESSION.session_id)
    with _running_writer(store, period_s=0.05) as (writer, recorder):
        recorder.begin(_Info("long_work()"))
        started = recorder.running
        assert started is not None
        run_id = recorder.window_of(started).run_id
        deadline = time.monotonic() + 60  # a bound on a condition, not a duration relied on
        while not (journal.exists() and run_id in read_journal(journal).open):
            assert time.monotonic() < deadline, "never journaled as open"
            time.sleep(0.01)
        recorder.end(_Result())
        assert writer.flush()
        lines = journal.read_text().splitlines()
        assert sum("long_work()" in line for line in lines) == 2  # one open, one close line
        state = read_journal(journal)
        assert run_id in state.closed and run_id not in state.open


def test_cells_queued_while_the_writer_drains_are_all_written(tmp_path: Path) -> None:
    """Cells closing on another thread while the writer snapshots its queue (a deque iterated
    while appended to raises): the writer thread survives and every cell is journaled."""
    import sys
    import threading

    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=0.001)
    writer.start()
    count = 20_000

    def close_cells() -> None:
        for index in range(count):
            window = OpenWindow(f"s1-{index:05d}", "x = 1", "ab" * 32, None, 0.0, 0, 0)
            writer.closed_cell(ClosedCell.of(window, 1, 1, "ok", None, index))

    closer = threading.Thread(target=close_cells)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: the race shows
    try:
        closer.start()
        while closer.is_alive():
            writer.pending_count  # noqa: B018 - reads the queue as `%prov status` does
        closer.join()
    finally:
        sys.setswitchinterval(interval)
    assert writer._thread is not None and writer._thread.is_alive()
    assert writer.close(timeout_s=120)
    state = read_journal(store.journal_path(SESSION.session_id))
    assert len(state.closed) == count


def test_periodic_drain_waits_for_a_quiet_moment_within_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic drain writes when no cell runs and none has just ended; while one runs it
    waits at most its bound, and a flush (urgent) stops the wait at once."""
    from jupyter_prov4ml.store import writer as writer_module

    writer = StoreWriter(Store(tmp_path / "store"), SESSION, Notices(), period_s=3600)
    recorder = _recorder_for(writer)
    assert writer._await_quiet()  # no cell has run
    recorder.begin(_Info("x = 1"))
    monkeypatch.setattr(writer_module, "QUIET_WAIT_S", 0.0)
    assert not writer._await_quiet()  # a cell runs: gives up at its bound
    recorder.end(_Result())
    monkeypatch.setattr(writer_module, "REPLY_GRACE_NS", 10**12)
    assert not writer._await_quiet()  # it has just ended: its reply is on its way
    monkeypatch.setattr(writer_module, "REPLY_GRACE_NS", 0)
    assert writer._await_quiet()
    recorder.begin(_Info("x = 2"))
    monkeypatch.setattr(writer_module, "QUIET_WAIT_S", 3600.0)
    writer._wake.set()
    assert not writer._await_quiet()  # urgent work came: no waiting for the cell to end
    assert writer.close()


def test_patient_drain_writes_everything_while_a_cell_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells queued while a long cell runs are all written, in batches, once each wait for
    a quiet moment has run out."""
    from jupyter_prov4ml.store import writer as writer_module

    monkeypatch.setattr(writer_module, "QUIET_WAIT_S", 0.0)
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=3600)
    _recorder_for(writer).begin(_Info("long_work()"))
    for n in range(200):  # more than one patient batch
        writer.closed_cell(plain_cell(n))
    writer._drain(patient=True)
    assert writer.pending_count == 0
    assert len(read_journal(store.journal_path("s1")).closed) == 200
    assert writer.close()


def test_a_cell_that_cannot_be_encoded_costs_that_record_only(tmp_path: Path) -> None:
    """A plain cell whose facts cannot be written (our bug) is dropped with one notice; the
    cells around it are written and indexed, and a flush behind it still returns."""
    store = Store(tmp_path / "store")
    notices = Notices()
    writer = StoreWriter(store, SESSION, notices, period_s=3600)
    bad = plain_cell(2)._replace(cell_id=object())  # type: ignore[arg-type]
    for cell in (plain_cell(1), bad, plain_cell(3)):
        writer.closed_cell(cell)
    assert writer.flush(timeout_s=10)
    assert sorted(read_journal(store.journal_path("s1")).closed) == ["s1-00001", "s1-00003"]
    assert [run.run_id for run in store.query()] == ["s1-00001", "s1-00003"]
    assert any("could not save a record" in message for message in notices.drain())
    assert writer.close()
