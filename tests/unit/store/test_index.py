"""The run index (`<store>/index.sqlite`): written by the store writer as runs close, caught
up from the journals by readers, rebuilt when missing, stale or corrupt, safe with several
writers, and the filters `%prov list` and `jupyter-prov4ml list` offer."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs, expanded_events, extension_of, journal_events
from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.kernel import magics
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import SessionInfo
from jupyter_prov4ml.store.index import INDEX_NAME, IndexedRun, RunIndex, RunQuery
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.writer import StoreWriter
from jupyter_prov4ml.views.run_table import RunTable, run_row

CELLS = [
    ("a = 1", "ok", None),
    ("1/0", "failed", None),
    (
        "%%provrun --name base-lr --param lr=0.1 --no-graph --no-live\nbatch_size = 64\n",
        "ok",
        "base-lr",
    ),
    ("%%provrun --name other --no-graph --no-live\nraise ValueError('x')\n", "failed", "other"),
    ("b = a + 1", "ok", None),
]


@pytest.fixture
def recorded(loaded: Any, store_dir: Path) -> Path:
    """A store recorded by a real shell: plain, failed, and %%provrun runs, all flushed."""
    for number, (source, _, _) in enumerate(CELLS):
        loaded.run_cell(source, store_history=True, cell_id=f"cell-{number}")
    assert extension_of(loaded).writer.flush(timeout_s=30)
    return store_dir


def index_rows(store: Path) -> dict[str, dict[str, Any]]:
    """The index's rows with their full records, read with plain sqlite3, by run id."""
    with sqlite3.connect(store / INDEX_NAME) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM runs LEFT JOIN records USING (run_id)").fetchall()
        return {row["run_id"]: dict(row) for row in rows}


def offsets(store: Path) -> dict[str, int]:
    with sqlite3.connect(store / INDEX_NAME) as connection:
        return dict(connection.execute("SELECT journal, journal_offset FROM sessions"))


def listed(store: Path) -> list[dict[str, Any]]:
    return [run_row(run) for run in Store(store).query()]


def refresh(store: Path) -> Any:
    with RunIndex.open(store) as index:
        return index.refresh()


# -- written by the store writer --------------------------------------------------------------


def test_writer_indexes_each_run_as_it_closes(recorded: Path) -> None:
    """Every closed run has a row with the record's facts, plain cells and %%provrun alike;
    the journal offset is at the journal's end, so a reader has nothing left to parse."""
    runs = closed_runs(recorded)
    rows = index_rows(recorded)
    assert set(rows) == {run["run_id"] for run in runs}
    for run, (_, status, name) in zip(runs, CELLS, strict=True):
        row = rows[run["run_id"]]
        assert row["session_id"] == run["session_id"]
        assert row["kind"] == run["kind"]
        assert (row["status"], row["name"]) == (status, name)
        assert row["cell_sha256"] == run["cell"]["sha256"]
        assert row["cell_id"] == run["cell"]["cell_id"]
        assert row["execution_count"] == run["cell"]["execution_count"]
        assert row["error_type"] == run["error_type"]
        assert row["started_at_unix_s"] == run["started_at_unix_s"]
        # Made once here for runs; for plain cells (the writer's per-cell cost) when listed.
        assert (
            row["started_at"] is None
            if run["kind"] == "cell"
            else row["started_at"].endswith("+00:00")
        )
        assert row["duration_s"] == run["wall_time_s"]
        assert row["cpu_time_s"] == run["cpu_time_s"]
        if run["kind"] == "cell":
            # No copy of a plain cell's line: the row says where it is in the journal.
            assert row["record_json"] is None and row["prov_path"] is None
            (journal,) = recorded.glob("sessions/*/journal.jsonl")
            with journal.open("rb") as handle:
                handle.seek(row["line_offset"])
                line = json.loads(handle.readline())
            assert expanded_events([journal_events(recorded)[0], line])[1]["run"] == run
            assert row["energy_j"] is None and row["params_json"] is None
        else:
            assert json.loads(row["record_json"])["run"] == run
            assert row["prov_path"] and not Path(row["prov_path"]).is_absolute()
            assert (recorded / row["prov_path"]).is_file()
            ledger = sum(r["energy_j"] for r in run["energy"]["readings"])
            assert row["energy_j"] == pytest.approx(ledger)
            assert Path(row["prov_path"]).name == f"{run['run_id']}.prov.json"
    base = rows[runs[2]["run_id"]]
    assert json.loads(base["params_json"]) == {"lr": 0.1, "batch_size": 64}
    (journal,) = recorded.glob("sessions/*/journal.jsonl")
    assert offsets(recorded) == {journal.parent.name: journal.stat().st_size}
    assert refresh(recorded).lines_parsed == 0


def test_index_file_is_private_and_in_wal_mode(recorded: Path) -> None:
    """The index is 0600 like every file of the store, and uses write-ahead logging."""
    path = recorded / INDEX_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_from_the_index_equal_rows_from_the_records(recorded: Path) -> None:
    """The listing path (index rows) and the record path (`Store.runs()`) give the same JSON
    rows, `energy_j` included."""
    store = Store(recorded)
    from_records = [run_row(stored) for stored in store.runs()]
    assert listed(recorded) == from_records
    assert [row["energy_j"] is None for row in from_records] == [True, True, False, False, True]


# -- rebuilt from the journals ------------------------------------------------------------------


def test_missing_index_is_rebuilt(recorded: Path, loaded: Any) -> None:
    """Without the index file, listing rebuilds it from the journals, with the same answer."""
    before = listed(recorded)
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    for path in recorded.glob(f"{INDEX_NAME}*"):
        path.unlink()
    assert listed(recorded) == before
    assert stat.S_IMODE((recorded / INDEX_NAME).stat().st_mode) == 0o600
    assert refresh(recorded).lines_parsed == 0


@pytest.mark.parametrize("garbage", [b"", b"not a database at all\n" * 100, bytes(range(256)) * 64])
def test_corrupt_index_is_rebuilt_silently(
    recorded: Path, loaded: Any, capsys: Any, garbage: bytes
) -> None:
    """An index overwritten with garbage is discarded and rebuilt: the CLI lists the same runs
    and says nothing about it; a kernel loaded afterwards indexes into the new file."""
    before = listed(recorded)
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    for path in recorded.glob(f"{INDEX_NAME}-*"):
        path.unlink()
    (recorded / INDEX_NAME).write_bytes(garbage)
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert json.loads(out.out) == before
    loaded.run_cell("%load_ext jupyter_prov4ml")
    loaded.run_cell("c = 3", store_history=True)
    assert extension_of(loaded).writer.flush(timeout_s=30)
    assert len(index_rows(recorded)) == len(before) + 1
    assert refresh(recorded).lines_parsed == 0


def test_stale_index_catches_up_only_on_what_it_lacks(recorded: Path, loaded: Any) -> None:
    """An index older than the journals (restored from a backup) gets the missing runs from
    the journal tails, without re-reading what it already had."""
    backup = recorded.parent / "index-backup.sqlite"
    with (
        sqlite3.connect(recorded / INDEX_NAME) as live,
        sqlite3.connect(backup) as copy,
    ):
        live.backup(copy)
    for number in range(5):
        loaded.run_cell(f"x{number} = {number}", store_history=True)
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    expected = listed(recorded)
    for path in recorded.glob(f"{INDEX_NAME}*"):
        path.unlink()
    shutil.copyfile(backup, recorded / INDEX_NAME)
    stats = refresh(recorded)
    assert stats.journals_read == 1
    # the five new cells (close lines; open lines are skipped unparsed) and the documents
    assert 5 <= stats.lines_parsed < 5 + len(CELLS)
    assert listed(recorded) == expected
    assert len(expected) == len(CELLS) + 5


def test_store_copied_elsewhere_lists_the_same_runs(recorded: Path, tmp_path: Path) -> None:
    """A store copied to another place (another machine) lists the same runs there, with its
    index or without it, and paths point into the copy."""
    before = listed(recorded)
    copy = tmp_path / "copied"
    shutil.copytree(recorded, copy)
    bare = tmp_path / "bare"
    shutil.copytree(recorded, bare, ignore=shutil.ignore_patterns(f"{INDEX_NAME}*"))

    def moved(rows: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
        return [
            {
                **row,
                "prov_path": row["prov_path"]
                and row["prov_path"].replace(str(recorded), str(root)),
            }
            for row in rows
        ]

    assert listed(copy) == moved(before, copy)
    assert listed(bare) == moved(before, bare)
    assert all(Path(row["prov_path"]).is_file() for row in listed(bare) if row["prov_path"])


def test_journal_rewritten_shorter_is_read_again(recorded: Path, loaded: Any) -> None:
    """A journal that shrank (rewritten by hand) is read again from its start."""
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    (journal,) = recorded.glob("sessions/*/journal.jsonl")
    lines = journal.read_text().splitlines(keepends=True)
    first_close = next(
        i
        for i, line in enumerate(lines)
        if line.startswith(('{"event":"close"', '{"event":"cell"'))
    )
    journal.write_text("".join(lines[: first_close + 1]))
    assert [row["run_id"] for row in listed(recorded)] == [closed_runs(recorded)[0]["run_id"]]


def test_deleted_session_folder_leaves_the_listing(recorded: Path, loaded: Any) -> None:
    """Runs of a session folder that was deleted are no longer listed."""
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    loaded.run_cell("%load_ext jupyter_prov4ml")
    loaded.run_cell("kept = 1", store_history=True)
    assert extension_of(loaded).writer.flush(timeout_s=30)
    first, second = sorted(recorded.glob("sessions/*"))
    shutil.rmtree(first)
    assert {row["session_id"] for row in listed(recorded)} == {second.name}


def test_unwritable_index_falls_back_to_memory(recorded: Path, loaded: Any) -> None:
    """Where the index file cannot be opened (here a folder sits at its path), runs are still
    listed and found, from an index built in memory."""
    before = listed(recorded)
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    for path in recorded.glob(f"{INDEX_NAME}*"):
        path.unlink()
    (recorded / INDEX_NAME).mkdir()
    assert listed(recorded) == before
    assert Store(recorded).find(before[2]["run_id"][-5:]).run.name == "base-lr"


def test_writer_survives_an_unwritable_index_and_resumes(
    recorded: Path, loaded: Any, capsys: Any
) -> None:
    """While the index cannot be written, the kernel records into the journal as always, with
    no warning; readers still list every run; once the index works again the writer resumes
    and readers are left nothing to parse."""
    extension = extension_of(loaded)
    for path in recorded.glob(f"{INDEX_NAME}*"):
        path.unlink()
    (recorded / INDEX_NAME).mkdir()
    for number in range(3):
        loaded.run_cell(f"blocked_{number} = {number}", store_history=True)
    assert extension.writer.flush(timeout_s=30)
    assert extension.notices.drain() == []
    assert "jupyter_prov4ml" not in capsys.readouterr().err
    assert len(listed(recorded)) == len(CELLS) + 3
    (recorded / INDEX_NAME).rmdir()
    assert len(listed(recorded)) == len(CELLS) + 3  # rebuilt from the journal
    loaded.run_cell("after = 1", store_history=True)
    assert extension.writer.flush(timeout_s=30)
    assert len(index_rows(recorded)) == len(CELLS) + 4
    assert refresh(recorded).lines_parsed == 0


def test_bad_journal_lines_are_skipped_like_the_journal_reader_does(
    recorded: Path, loaded: Any
) -> None:
    """Garbage and half-written lines in a journal (after its kernel ended) are skipped by the
    index as by `read_journal`: the same runs are listed, and good lines after them are read."""
    from jupyter_prov4ml.store.journal import read_journal

    loaded.run_cell("%unload_ext jupyter_prov4ml")  # one writer per journal: its kernel's
    (journal,) = recorded.glob("sessions/*/journal.jsonl")
    good = journal.read_text().splitlines(keepends=True)
    last_close = next(line for line in reversed(good) if '"event":"close"' in line)
    moved = json.loads(last_close)
    moved["run"]["run_id"] += "-copy"
    with journal.open("a", encoding="utf-8") as out:
        out.write("not json\n[1, 2]\nnull\n{}\n")
        out.write('{"event": "close", "run": {"run_id": "x"}}\n')
        out.write('{"event": "close", "run": {"run_id": "y", "cell": "oops"}}\n')
        out.write('{"event":"close","run":{"run_id":"z","params":[{"bogus":1}]}}\n')
        out.write("[" * 100_000 + "\n")
        out.write(last_close[: len(last_close) // 2] + "\n")
        out.write(json.dumps(moved) + "\n")
    with journal.open("ab") as out:
        out.write(b"\xff\xfe garbage bytes\n")
    expected = sorted(read_journal(journal).closed)
    assert sorted(row["run_id"] for row in listed(recorded)) == expected
    assert moved["run"]["run_id"] in expected
    assert refresh(recorded).lines_parsed == 0


def test_missing_store_creates_nothing(tmp_path: Path) -> None:
    """Listing a store that does not exist answers nothing and creates no files."""
    assert Store(tmp_path / "none").query() == []
    assert not (tmp_path / "none").exists()


# -- several kernels on one store ----------------------------------------------------------------


def session(session_id: str) -> SessionInfo:
    return SessionInfo(session_id, "u", 0.0, (("python", "3"),), "h", "p", "cpu", 2, 1)


def plain_cell(session_id: str, n: int) -> ClosedCell:
    window = OpenWindow(f"{session_id}-{n:05d}", f"x = {n}", "0" * 64, None, 100.0 + n, 0, 0)
    return ClosedCell.of(window, 10**6, 10**5, "ok" if n % 7 else "failed", None, n)


def test_two_kernels_write_one_store_while_it_is_read(tmp_path: Path) -> None:
    """Two store writers (two kernels) index into one store while a reader lists it over and
    over: no errors, every run indexed, and the writers' notices stay empty."""
    root = tmp_path / "store"
    writers = [
        StoreWriter(Store(root), session(f"k{k}"), Notices(), period_s=0.001) for k in range(2)
    ]
    cells = 400
    errors: list[BaseException] = []
    done = threading.Event()

    def kernel(writer: StoreWriter) -> None:
        try:
            for n in range(cells):
                writer.closed_cell(plain_cell(writer.session.session_id, n))
                if n % 50 == 0:
                    assert writer.flush(timeout_s=30)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def reader() -> None:
        try:
            while not done.is_set():
                Store(root).query(RunQuery(failed=True, last=5))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    for writer in writers:
        writer.start()
    threads = [threading.Thread(target=kernel, args=(w,)) for w in writers]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(120)
    for writer in writers:
        assert writer.close(timeout_s=60)
    done.set()
    threads[2].join(60)
    assert errors == []
    assert all(not writer.notices.drain() for writer in writers)
    journals = {p.parent.name: p.stat().st_size for p in root.glob("sessions/*/journal.jsonl")}
    assert offsets(root) == journals
    assert len(index_rows(root)) == 2 * cells
    assert refresh(root).lines_parsed == 0


# -- filters ------------------------------------------------------------------------------------


def test_query_filters(recorded: Path) -> None:
    """`kind`, `name` (exact or glob), `failed` (any status but ok) and `last` (newest N,
    after filtering, oldest first) select runs in the index."""
    ids = [run["run_id"] for run in closed_runs(recorded)]
    store = Store(recorded)

    def picked(**options: Any) -> list[str]:
        return [run.run_id for run in store.query(RunQuery(**options))]

    assert picked() == ids
    assert picked(kind="provrun") == ids[2:4]
    assert picked(name="other") == [ids[3]]
    assert picked(name="base*") == [ids[2]]
    assert picked(name="base") == []
    assert picked(failed=True) == [ids[1], ids[3]]
    assert picked(failed=True, kind="cell") == [ids[1]]
    assert picked(last=2) == ids[3:]
    assert picked(last=0) == []
    assert picked(kind="cell", last=1) == [ids[4]]
    runs, total = store.listing(RunQuery(kind="cell", last=1))
    assert (len(runs), total) == (1, 3)
    assert all(isinstance(run, IndexedRun) for run in runs)


def test_prov_list_options(recorded: Path, loaded: Any) -> None:
    """`%prov list --failed --name X --kind K --last N` filters like the CLI."""
    ids = [run["run_id"] for run in closed_runs(recorded)]

    def shown(line: str) -> list[str]:
        table = loaded.run_line_magic("prov", f"list {line}")
        assert isinstance(table, RunTable)
        return [row["run_id"] for row in table.rows]

    assert shown("--failed") == [ids[1], ids[3]]
    assert shown("--name base*") == [ids[2]]
    assert shown("--failed --kind provrun") == [ids[3]]
    assert shown("--kind cell --last 2")[-1] == ids[4]


def test_prov_list_html_columns(recorded: Path, loaded: Any) -> None:
    """The notebook table has run, name, cell, when, duration, status, energy and key
    parameters; failures show their exception; the text form has energy and parameters."""
    table = loaded.run_line_magic("prov", "list")
    page = table._repr_html_()
    for heading in ("run", "name", "cell", "when", "duration", "status", "energy", "key params"):
        assert f"<th>{heading}" in page.replace("key parameters", "key params")
    assert "failed (ZeroDivisionError)" in page
    assert "lr=0.1, batch_size=64" in page and " J</td>" in page
    assert "lr=0.1, batch_size=64" in repr(table)


def test_prov_list_shows_the_newest_runs_by_default(
    recorded: Path, loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `--last` or `--all` the notebook table holds only the newest runs, and says how
    many there are; `--all` shows every one."""
    monkeypatch.setattr(magics, "NOTEBOOK_LIST_LIMIT", 2)
    table = loaded.run_line_magic("prov", "list")
    assert len(table.rows) == 2 and table.total == len(CELLS)
    assert f"the newest 2 of {len(CELLS)} runs" in repr(table)
    assert "the newest 2" in table._repr_html_()
    everything = loaded.run_line_magic("prov", "list --all")
    assert len(everything.rows) == len(CELLS)
    assert "newest" not in repr(everything)


def test_cli_list_filters_and_wide_table(recorded: Path, capsys: Any) -> None:
    """`jupyter-prov4ml list --failed --name X` filters; `--wide` adds energy and parameters;
    `--json` rows carry `energy_j`."""
    ids = [run["run_id"] for run in closed_runs(recorded)]
    capsys.readouterr()
    assert main(["list", "--json", "--failed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["run_id"] for row in rows] == [ids[1], ids[3]]
    assert all("energy_j" in row for row in rows)
    assert main(["list", "--json", "--name", "base-lr"]) == 0
    assert [row["run_id"] for row in json.loads(capsys.readouterr().out)] == [ids[2]]
    assert main(["list", "--wide", "--kind", "provrun"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["energy_j", "params"]
    assert "lr=0.1, batch_size=64" in lines[0]
