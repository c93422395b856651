"""The store: journal lines and records, reading runs back, atomic private writes, and where
the store lives."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow
from jupyter_prov4ml.capture.run_capture import RunSeries
from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import (
    CellRef,
    CellRun,
    DataFile,
    EnergyLedger,
    EnergyReading,
    HardwareSummary,
    Param,
    SeriesSummary,
    SessionInfo,
)
from jupyter_prov4ml.settings import DEFAULT_DIRNAME, STORE_ENV, resolve_store_root
from jupyter_prov4ml.store.codec import encode_line, run_from_dict, run_to_dict, session_to_dict
from jupyter_prov4ml.store.files import atomic_write_bytes
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.writer import StoreWriter

SESSION = "20260101T000000-abcdef"


def session_info(session_id: str = SESSION) -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        user="ada",
        started_at_unix_s=1_700_000_000.0,
        software=(("python", "3.11.7"), ("jupyter_prov4ml", "0.1.0")),
        hostname="node-1",
        platform="Linux",
        cpu_model="Test CPU",
        cpu_count_logical=8,
        memory_total_bytes=16 << 30,
        gpus=("NVIDIA H100",),
        notebook_path="train.ipynb",
    )


def make_run(
    run_id: str = f"{SESSION}-00001",
    session_id: str = SESSION,
    started: float = 1_700_000_001.0,
    kind: str = "provrun",
) -> CellRun:
    summary = SeriesSummary(count=3, first=1.0, last=3.0, min=1.0, max=3.0, mean=2.0)
    return CellRun(
        run_id=run_id,
        session_id=session_id,
        kind=kind,  # type: ignore[arg-type]
        cell=CellRef("ab" * 32, "%%provrun\nlr = 0.1\n", "cell-1", 7, "train.ipynb"),
        started_at_unix_s=started,
        ended_at_unix_s=started + 2.5,
        wall_time_s=2.5,
        cpu_time_s=2.25,
        status="failed",
        error_type="ValueError",
        name="baseline",
        params=(
            Param("lr", 0.1, "magic"),
            Param("epochs", 3, "literal"),
            Param("opt", "sgd", "api"),
            Param("amp", True, "magic"),
            Param("seed", None, "literal"),
        ),
        hardware=HardwareSummary(
            sample_count=3,
            interval_s=0.1,
            downsample_factor=2,
            series=(("process_cpu_percent", summary), ("gpu0_power_w", summary)),
        ),
        energy=EnergyLedger(
            readings=(EnergyReading("cpu", "cpu", 12.5, "estimated", 2.5, "TDP model"),),
            carbon_intensity_g_per_kwh=400.0,
        ),
        data_files=(
            DataFile(
                "hardware_samples",
                f"sessions/{session_id}/runs/{run_id}.hardware_samples.parquet",
                "cd" * 32,
                1234,
                "application/vnd.apache.parquet",
            ),
        ),
    )


def write_journal(store_root: Path, session_id: str, lines: list[str]) -> Path:
    path = store_root / "sessions" / session_id / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def close_line(run: CellRun, prov_path: str | None = None) -> str:
    return encode_line("close", {"run": run_to_dict(run), "prov_path": prov_path})


# -- journal --------------------------------------------------------------------------------


def test_run_round_trips_through_a_json_journal_line() -> None:
    """A CellRun with params, hardware, energy and data files survives dict → JSON → dict."""
    run = make_run()
    line = close_line(run)
    assert line.endswith("\n") and line.count("\n") == 1
    decoded = json.loads(line)
    assert decoded["event"] == "close"
    assert run_from_dict(decoded["run"]) == run


def test_minimal_plain_cell_round_trips() -> None:
    """A plain cell record without hardware, energy or params round-trips too."""
    run = CellRun(
        run_id="r1",
        session_id=SESSION,
        kind="cell",
        cell=CellRef("00" * 32, "x = 1"),
        started_at_unix_s=1.0,
        ended_at_unix_s=1.5,
        wall_time_s=0.5,
        cpu_time_s=0.25,
        status="ok",
    )
    assert run_from_dict(json.loads(json.dumps(run_to_dict(run)))) == run


def test_journal_lines_are_strict_json() -> None:
    """Non-finite floats never reach the journal as NaN/Infinity (which is not JSON)."""
    run = dataclasses.replace(make_run(), wall_time_s=float("nan"))
    line = close_line(run)
    assert "NaN" not in line
    json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))


def test_read_journal_skips_and_counts_bad_lines(tmp_path: Path) -> None:
    """Truncated, garbage and foreign lines are skipped and counted; good ones are kept."""
    good = make_run()
    other = make_run(run_id=f"{SESSION}-00002", started=1_700_000_010.0)
    full_close = close_line(other)
    lines = [
        encode_line("session", {"session": session_to_dict(session_info())}),
        encode_line("open", {"run_id": good.run_id, "kind": "provrun"}),
        close_line(good, f"sessions/{SESSION}/runs/{good.run_id}.prov.json"),
        "not json at all\n",
        "\n",
        "{}\n",
        "[1, 2, 3]\n",
        "null\n",
        '"a string"\n',
        '{"event": "close", "run": {"run_id": "x"}}\n',
        '{"event": "close", "run": {"run_id": "y", "cell": "oops"}}\n',
        '{"event": "open"}\n',
        encode_line("open", {"run_id": "still-open", "kind": "provrun"}),
        full_close[: len(full_close) // 2] + "\n",  # a kernel killed mid-write
    ]
    path = write_journal(tmp_path, SESSION, lines)
    with path.open("ab") as journal:
        journal.write(b"\xff\xfe\x00garbage bytes\n")
    state = read_journal(path)
    assert state.session == session_info()
    assert list(state.closed) == [good.run_id]
    assert state.closed[good.run_id] == (good, f"sessions/{SESSION}/runs/{good.run_id}.prov.json")
    assert list(state.open) == ["still-open"]
    assert state.bad_lines == 11


def test_read_journal_final_line_without_newline(tmp_path: Path) -> None:
    """A last line cut off before its newline is counted as bad, earlier lines still read."""
    run = make_run()
    path = write_journal(tmp_path, SESSION, [close_line(run), close_line(make_run("z"))[:-40]])
    state = read_journal(path)
    assert list(state.closed) == [run.run_id]
    assert state.bad_lines == 1


def test_read_journal_missing_file(tmp_path: Path) -> None:
    """A journal that does not exist reads as empty, not an error."""
    state = read_journal(tmp_path / "nope.jsonl")
    assert (state.session, state.closed, state.open, state.bad_lines) == (None, {}, {}, 0)


def test_read_journal_survives_deeply_nested_garbage(tmp_path: Path) -> None:
    """A garbage line of deeply nested brackets is one bad line, not a crash of `list`."""
    run = make_run()
    path = write_journal(tmp_path, SESSION, [close_line(run), "[" * 100_000 + "\n"])
    state = read_journal(path)
    assert list(state.closed) == [run.run_id]
    assert state.bad_lines == 1


# -- Store.runs / Store.find ----------------------------------------------------------------


@pytest.fixture
def two_session_store(tmp_path: Path) -> Store:
    """Two sessions; ids `S1-00001`, `S1-00002`, `S2-00001`, and `S2-x00001`."""
    root = tmp_path / "store"
    s1, s2 = "S1", "S2"
    write_journal(
        root,
        s1,
        [
            encode_line("session", {"session": session_to_dict(session_info(s1))}),
            close_line(make_run(f"{s1}-00002", s1, started=30.0), f"sessions/{s1}/b.prov.json"),
            close_line(make_run(f"{s1}-00001", s1, started=10.0), f"sessions/{s1}/a.prov.json"),
        ],
    )
    write_journal(
        root,
        s2,
        [
            close_line(make_run(f"{s2}-00001", s2, started=20.0, kind="cell")),
            close_line(make_run(f"{s2}-x00001", s2, started=40.0)),
            encode_line("open", {"run_id": f"{s2}-00009", "kind": "provrun"}),
        ],
    )
    (root / "sessions" / "not-a-session").mkdir()
    (root / "sessions" / "stray-file").write_text("x")
    return Store(root)


def test_runs_lists_closed_runs_oldest_first(two_session_store: Store) -> None:
    """`runs()` gives every closed run of every session, by start time, with its session."""
    runs = two_session_store.runs()
    assert [s.run.run_id for s in runs] == ["S1-00001", "S2-00001", "S1-00002", "S2-x00001"]
    by_id = {s.run.run_id: s for s in runs}
    assert by_id["S1-00001"].session == session_info("S1")
    assert by_id["S2-00001"].session is None
    root = two_session_store.root
    assert by_id["S1-00001"].prov_path == root / "sessions/S1/a.prov.json"
    assert by_id["S2-00001"].prov_path is None


def test_runs_of_an_empty_or_missing_store(tmp_path: Path) -> None:
    """A store folder that does not exist yet lists no runs."""
    assert Store(tmp_path / "missing").runs() == []


def test_find_exact_and_unique_suffix(two_session_store: Store) -> None:
    """A full id, or a unique end of one, finds the run; an exact id beats a suffix match."""
    assert two_session_store.find("S1-00002").run.run_id == "S1-00002"
    assert two_session_store.find("00002").run.run_id == "S1-00002"
    assert two_session_store.find("x00001").run.run_id == "S2-x00001"
    assert two_session_store.find("S2-00001").run.run_id == "S2-00001"


def test_find_ambiguous_suffix(two_session_store: Store) -> None:
    """A suffix shared by several runs is a LookupError that says how many matched."""
    with pytest.raises(LookupError, match="3 runs"):
        two_session_store.find("00001")


@pytest.mark.parametrize("ref", ["nope", "S2-00009", "S1-0000", "S3"])
def test_find_unknown(two_session_store: Store, ref: str) -> None:
    """An id that no closed run has (or ends with) is a LookupError naming it."""
    with pytest.raises(LookupError, match=repr(ref)):
        two_session_store.find(ref)


# -- atomic, private writes -----------------------------------------------------------------


def test_atomic_write_creates_private_file_and_folders(tmp_path: Path) -> None:
    """New folders are 0700, the file is 0600, and no temporary file is left behind."""
    tmp_path.chmod(0o755)
    # Not named *.prov.json: `{"x": 1}` is no PROV document, and conftest checks those.
    target = tmp_path / "a" / "b" / "c" / "run.json"
    atomic_write_bytes(target, b'{"x": 1}')
    assert target.read_bytes() == b'{"x": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755, "existing folders are left alone"
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]


def test_atomic_write_replaces_and_tightens_an_existing_file(tmp_path: Path) -> None:
    """Overwriting replaces the whole content and the file ends up 0600 again."""
    target = tmp_path / "doc.json"
    target.write_bytes(b"old content that is longer than the new one")
    target.chmod(0o644)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_atomic_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    """When the final rename fails the error is raised and the temporary file is removed."""
    target = tmp_path / "occupied"
    (target / "child").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]
    assert [p.name for p in target.iterdir()] == ["child"]


# -- where the store lives ------------------------------------------------------------------


def test_store_root_from_absolute_env(tmp_path: Path) -> None:
    """An absolute `$JUPYTER_PROV4ML_STORE` is used as is."""
    elsewhere = tmp_path / "shared" / "prov"
    assert resolve_store_root({STORE_ENV: str(elsewhere)}, tmp_path / "nb") == elsewhere


def test_store_root_from_relative_env(tmp_path: Path) -> None:
    """A relative `$JUPYTER_PROV4ML_STORE` is taken relative to the kernel's directory."""
    root = resolve_store_root({STORE_ENV: "runs/prov"}, tmp_path)
    assert root == tmp_path / "runs" / "prov" and root.is_absolute()


def test_store_root_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` in `$JUPYTER_PROV4ML_STORE` is the user's home folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_store_root({STORE_ENV: "~/prov"}, Path("/x")) == tmp_path / "home" / "prov"


@pytest.mark.parametrize("environ", [{}, {STORE_ENV: ""}, {"OTHER": "/elsewhere"}])
def test_store_root_default(tmp_path: Path, environ: dict[str, str]) -> None:
    """Without the variable (or with it empty) the store is `prov4ml/` in the working dir."""
    assert DEFAULT_DIRNAME == "prov4ml"
    assert resolve_store_root(environ, tmp_path) == tmp_path / "prov4ml"


# -- the writer's flush ---------------------------------------------------------------------


def closed_cell(run: CellRun) -> ClosedCell:
    """The raw form in which a cell hook hands a finished plain cell to the writer."""
    window = OpenWindow(
        run.run_id,
        run.cell.source,
        run.cell.sha256,
        run.cell.cell_id,
        run.started_at_unix_s,
        0,
        0,
    )
    return ClosedCell.of(
        window,
        int(run.wall_time_s * 1e9),
        int(run.cpu_time_s * 1e9),
        run.status,
        run.error_type,
        run.cell.execution_count,
    )


def test_flush_returns_only_after_earlier_lines_are_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once `flush()` returns True, every record queued before it is readable in the journal,
    even while the writer is still busy with a record queued after it."""
    from jupyter_prov4ml.store import run_files as run_files_module

    # A %%provrun job whose series encoding waits for the test: the writer is held inside
    # it, right after the flush marker, until the journal has been read.
    encoding, release = threading.Event(), threading.Event()
    encode = run_files_module.encode_run_series

    def held_encode(series: RunSeries) -> Any:
        encoding.set()
        release.wait(60)
        return encode(series)

    monkeypatch.setattr(run_files_module, "encode_run_series", held_encode)
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, session_info(), Notices(), period_s=60)
    writer.start()
    try:
        assert writer.flush(timeout_s=30)
        queued_first = make_run(kind="cell")
        seen: dict[str, object] = {}

        def flush_and_read() -> None:
            try:
                seen["flushed"] = writer.flush(timeout_s=30)
                seen["writer busy after the marker"] = encoding.wait(30)
                seen["state"] = read_journal(store.journal_path(SESSION))
            finally:
                release.set()

        # Hold the writer so that the queue is [cell record, flush marker, a held %%provrun
        # job] when it drains: this makes the race deterministic.
        flusher = threading.Thread(target=flush_and_read)
        with writer._drain_lock:
            writer.closed_cell(closed_cell(queued_first))
            flusher.start()
            while not any(type(item).__name__ == "_FlushMarker" for item in writer._pending):
                threading.Event().wait(0.001)
            held = make_run(run_id=f"{SESSION}-00009")
            writer.submit_run(held, RunSeries(samples=SampleColumns()))
        flusher.join(120)
        assert seen["flushed"] is True
        assert seen["writer busy after the marker"] is True
        assert queued_first.run_id in seen["state"].closed  # type: ignore[attr-defined]
        # ... while the run queued after it was still being written: its record is journaled
        # when it is queued, but not yet with its files and document (no document path).
        closed = seen["state"].closed  # type: ignore[attr-defined]
        assert held.run_id not in closed or closed[held.run_id][1] is None
    finally:
        release.set()
        writer.close(timeout_s=30)


def _modes_under(root: Path) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {"dirs": {stat.S_IMODE(root.stat().st_mode)}, "files": set()}
    for path in root.rglob("*"):
        found["dirs" if path.is_dir() else "files"].add(stat.S_IMODE(path.stat().st_mode))
    return found


def _record_everything(shell: Any) -> None:
    """Plain cells, a %%provrun with metrics (data files, PROV document) and a listing
    (the index): every kind of file the store holds."""
    for cell in (
        "%load_ext jupyter_prov4ml",
        "a = 1",
        "%%provrun --no-graph\nfrom jupyter_prov4ml import log_metric\nlog_metric('m', 1.0)",
        "%prov list",
    ):
        assert shell.run_cell(cell, store_history=True).success
    shell._jupyter_prov4ml.writer.flush()


def test_whole_store_is_private_by_default(shell: Any, store_dir: Path) -> None:
    """Every folder 0700 and every file 0600 (journal, lock, PROV, Parquet, index, -wal/-shm),
    whatever the umask allows."""
    old = os.umask(0o002)
    try:
        _record_everything(shell)
    finally:
        os.umask(old)
    assert _modes_under(store_dir) == {"dirs": {0o700}, "files": {0o600}}


def test_store_mode_shares_with_the_group_when_configured(
    shell: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`JUPYTER_PROV4ML_STORE_MODE=770`: folders 0770 and files 0660 even under a umask that
    would take the group's write bit away."""
    monkeypatch.setenv("JUPYTER_PROV4ML_STORE_MODE", "770")
    old = os.umask(0o027)
    try:
        _record_everything(shell)
    finally:
        os.umask(old)
    modes = _modes_under(store_dir)
    assert modes == {"dirs": {0o770}, "files": {0o660}}, modes


@pytest.mark.parametrize("value", ["rwx", "640", "1777", "-1", "9"])
def test_bad_store_mode_is_one_line_and_private(
    shell: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, value: str
) -> None:
    monkeypatch.setenv("JUPYTER_PROV4ML_STORE_MODE", value)
    _record_everything(shell)
    err = capsys.readouterr().err
    assert err.count("JUPYTER_PROV4ML_STORE_MODE") == 1 and "Traceback" not in err
    assert _modes_under(store_dir) == {"dirs": {0o700}, "files": {0o600}}


def test_damaged_journal_lines_are_skipped_with_one_warning(
    shell: Any, store_dir: Path, capsys: Any
) -> None:
    """Garbage and a truncated line in a journal: `%prov list` and the CLI list every valid
    run and say, in one line, that damaged lines were skipped."""
    from jupyter_prov4ml.cli.main import main

    _record_everything(shell)
    shell.run_line_magic("unload_ext", "jupyter_prov4ml")  # a session that has ended
    capsys.readouterr()
    (journal,) = store_dir.glob("sessions/*/journal.jsonl")
    with journal.open("a") as handle:
        handle.write('{"event":"close","run":{"run_id": 7}}\n\x00\xff garbage\n{"event":"clo\n')
    valid = {r["run_id"] for r in journal_events_of(journal) if r}
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.run_cell("%prov list --all", store_history=True)
    err = capsys.readouterr().err
    assert err.count("damaged journal line") == 1 and "Traceback" not in err
    assert main(["list", "--store", str(store_dir), "--json"]) == 0
    captured = capsys.readouterr()
    assert {run["run_id"] for run in json.loads(captured.out)} >= valid
    assert "Traceback" not in captured.err


def journal_events_of(journal: Path) -> list[str]:
    runs = []
    for line in journal.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "close" and isinstance(entry["run"].get("run_id"), str):
            runs.append({"run_id": entry["run"]["run_id"]})
    return runs


@pytest.mark.parametrize("markers_behind", [0, 1, 2])
def test_heavy_lane_survives_a_full_disk_with_or_without_flushes_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, markers_behind: int
) -> None:
    """A run whose files cannot be written (ENOSPC) stays queued, the flush markers behind it
    are answered at once, one notice is said; once space is back the run is written. (With no
    marker waiting, this path once raised UnboundLocalError and killed the lane's thread.)"""
    import errno
    from concurrent.futures import Future

    from jupyter_prov4ml.store import run_files as run_files_module
    from jupyter_prov4ml.store.run_files import RunFiles, RunFilesWritten, RunJob

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    forwarded: list[Any] = []
    notices = Notices()
    lane = RunFiles(Store(tmp_path / "store"), session_info(), notices, forwarded.append, 0.1)
    run = make_run(run_id=f"{SESSION}-0000{markers_behind + 1}")
    job = RunJob(run, RunSeries(samples=SampleColumns()), Future())
    lane.submit(job)
    markers = [object() for _ in range(markers_behind)]
    for marker in markers:
        lane.pass_along(marker)
    monkeypatch.setattr(run_files_module, "atomic_write_bytes", full)
    lane.work()
    lane.work()
    assert forwarded == markers
    said = notices.drain()
    assert len(said) == 1 and "No space left on device" in said[0]
    monkeypatch.undo()
    lane.work()
    assert [type(item) for item in forwarded[markers_behind:]] == [RunFilesWritten]
    assert (tmp_path / "store" / forwarded[-1].prov_path).is_file()
