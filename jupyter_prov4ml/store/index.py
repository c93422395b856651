"""The run index: every closed run of a store in SQLite, for `list`, `find` and `runs()`.

`<store>/index.sqlite` (WAL, busy timeout) holds a row per run with what a listing shows, the
run's full journal record apart, and per session how far its journal has been indexed. It is
derived data: the journals stay the source of truth.

Each kernel's store writer adds the runs it closes, one transaction per drained batch, from
its own connection (`IndexWriter`). Readers (`RunIndex`) catch up from the journals before
answering, parsing only what no writer indexed (a store copied from elsewhere, a killed
kernel, a deleted or corrupt index). A corrupt index file is discarded and rebuilt; a store
the reader cannot write is indexed in memory for that call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import operator
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.notation import iso_utc, utf8_safe
from jupyter_prov4ml.records import CellRef, CellRun, ParamValue
from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.codec import CELL_EVENT, cell_run_id, run_from_dict, session_from_dict
from jupyter_prov4ml.store.files import open_store_file
from jupyter_prov4ml.store.journal import MAX_LINE_BYTES

T = TypeVar("T")
# The most runs or executions a `--last N` may ask for (SQLite integers are 64-bit).
MAX_COUNT = 10**12
INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = "4"
BUSY_TIMEOUT_S = 10.0
_SIDE_FILES = ("-wal", "-shm", "-journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    journal TEXT PRIMARY KEY,          -- the session folder's name
    session_json TEXT,                 -- its last `session` journal line, if any
    journal_offset INTEGER NOT NULL DEFAULT 0  -- bytes of the journal already indexed
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    journal TEXT NOT NULL,             -- the session folder whose journal holds the record
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    cell_sha256 TEXT NOT NULL,
    cell_id TEXT,
    execution_count INTEGER,
    notebook_path TEXT,
    status TEXT NOT NULL,
    error_type TEXT,
    started_at_unix_s REAL NOT NULL,
    started_at TEXT,                   -- ISO 8601, UTC, made once here; NULL for plain cells
                                       -- (made when listed: the writer's per-cell cost)
    duration_s REAL NOT NULL,
    cpu_time_s REAL NOT NULL,
    energy_j REAL,                     -- total over devices; NULL when nothing was measured
    params_json TEXT,                  -- {"name": value, ...}, NULL without parameters
    prov_path TEXT,                    -- relative to the store
    line_offset INTEGER                -- where its compact journal line starts (plain cells)
);
-- Full records apart, so that listing reads small rows. A plain cell has none: its compact
-- journal line is read at `line_offset` (a copy here would double what each cell costs).
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT PRIMARY KEY,
    record_json TEXT NOT NULL          -- the journal's `close` line
) WITHOUT ROWID;
-- The one secondary index, for `--last N`: each index costs the writer on every run.
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at_unix_s, run_id);
"""

_ROW_COLUMNS = (
    "run_id, journal, session_id, kind, name, cell_sha256, cell_id, execution_count, "
    "notebook_path, status, error_type, started_at_unix_s, started_at, duration_s, cpu_time_s, "
    "energy_j, params_json, prov_path, line_offset"
)
# An upsert that keeps a known document path when a record is journaled again without one.
_UPSERT_RUN = (
    f"INSERT INTO runs ({_ROW_COLUMNS}) VALUES ({', '.join('?' * 19)}) "
    "ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in _ROW_COLUMNS.replace(" ", "").split(",")[1:]
        if c != "prov_path"
    )
    + ", prov_path = COALESCE(excluded.prov_path, runs.prov_path)"
)
_UPSERT_RECORD = "INSERT OR REPLACE INTO records (run_id, record_json) VALUES (?, ?)"
# A plain cell's row binds only the columns a cell has (the others are NULL): a third fewer
# values to bind, on the writer's per-cell path.
_CELL_COLUMNS = (
    "run_id, journal, session_id, cell_sha256, cell_id, execution_count, notebook_path, "
    "status, error_type, started_at_unix_s, duration_s, cpu_time_s, line_offset"
)
_UPSERT_CELL = (
    f"INSERT INTO runs (kind, {_CELL_COLUMNS}) VALUES ('cell', {', '.join('?' * 13)}) "
    "ON CONFLICT (run_id) DO UPDATE SET kind = 'cell', "
    + ", ".join(f"{c} = excluded.{c}" for c in _CELL_COLUMNS.replace(" ", "").split(",")[1:])
    + ", name = NULL, started_at = NULL, energy_j = NULL, params_json = NULL"
)
_SET_DOCUMENT = "UPDATE runs SET prov_path = ? WHERE run_id = ?"
_LISTED = (
    "run_id, session_id, kind, name, cell_sha256, cell_id, execution_count, notebook_path, "
    "status, error_type, started_at_unix_s, started_at, duration_s, cpu_time_s, energy_j, "
    "params_json, prov_path"
)
# Keys of a plain cell's record; a record with any other key is validated in full.
_PLAIN_KEYS = frozenset(
    (
        "run_id",
        "session_id",
        "kind",
        "cell",
        "started_at_unix_s",
        "ended_at_unix_s",
        "wall_time_s",
        "cpu_time_s",
        "status",
        "error_type",
    )
)
# Lines that say a run is under way (open, progress checkpoints): `recovery` reads them, the
# index does not, and skipping them unparsed keeps a long run's checkpoints cheap to index.
_UNDER_WAY_PREFIXES = (b'{"event":"open"', b'{"event":"progress"')
_START_ORDER = operator.itemgetter(10, 0)  # (started_at_unix_s, run_id) of a _LISTED row


class IndexedRun(NamedTuple):
    """One run as the index lists it: what a table of runs shows, without the full record.

    A NamedTuple, not a frozen dataclass: a listing makes 10,000 of these, and a frozen
    dataclass costs ~8x more to create.
    """

    run_id: str
    session_id: str
    kind: str
    name: str | None
    cell_sha256: str
    cell_id: str | None
    execution_count: int | None
    notebook_path: str | None
    status: str
    error_type: str | None
    started_at_unix_s: float
    started_at: str  # ISO 8601, UTC
    duration_s: float
    cpu_time_s: float
    energy_j: float | None
    params: tuple[tuple[str, ParamValue], ...]
    prov_path: Path | None  # absolute

    @classmethod
    def of(cls, run: CellRun, prov_path: Path | None) -> IndexedRun:
        """The index's view of a full record."""
        total = run.energy.total_j if run.energy is not None and run.energy.readings else None
        return cls(
            run_id=run.run_id,
            session_id=run.session_id,
            kind=run.kind,
            name=run.name,
            cell_sha256=run.cell.sha256,
            cell_id=run.cell.cell_id,
            execution_count=run.cell.execution_count,
            notebook_path=run.cell.notebook_path,
            status=run.status,
            error_type=run.error_type,
            started_at_unix_s=run.started_at_unix_s,
            started_at=iso_utc(run.started_at_unix_s),
            duration_s=run.wall_time_s,
            cpu_time_s=run.cpu_time_s,
            energy_j=_finite(total),
            params=tuple(dict((p.name, p.value) for p in run.params).items()),
            prov_path=prov_path,
        )


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs to list: all filters apply, then `last` keeps the newest N."""

    kind: str | None = None
    name: str | None = None  # a glob pattern (`*`, `?`, `[...]`); exact when it has none
    failed: bool = False  # only runs whose status is not `ok`
    last: int | None = None
    tag: str | None = None  # only runs with this tag (store/annotations.py)

    def __post_init__(self) -> None:
        if self.last is not None and not (
            isinstance(self.last, int) and 0 <= self.last <= MAX_COUNT
        ):
            raise ValueError(f"--last must be a whole number from 0 to {MAX_COUNT:,}")

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if self.kind is not None:
            clauses.append("kind = ?")
            args.append(self.kind)
        if self.name is not None:
            clauses.append("name GLOB ?")
            args.append(self.name)
        if self.failed:
            clauses.append("status != 'ok'")
        if self.tag is not None:
            clauses.append("run_id IN (SELECT run_id FROM temp.run_tags WHERE tag = ?)")
            args.append(self.tag)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A run's full journal record as the index keeps it, to be decoded by the store."""

    record_json: str
    prov_path: str | None
    session_json: str | None


@dataclass(slots=True)
class RefreshStats:
    """What a reader's catch-up did: how much of the journals it had to parse."""

    journals_read: int = 0
    lines_parsed: int = 0
    bad_lines: int = 0


def index_path(store_root: Path) -> Path:
    return store_root / INDEX_NAME


# -- rows ------------------------------------------------------------------------------------


def row_of_record(
    journal: str, run: dict[str, Any], prov_path: str | None, record_json: str
) -> tuple[Any, ...]:
    """The index row of a journal record (the dict form written by `run_to_dict`)."""
    cell = run["cell"]
    run_id = run["run_id"]
    if not isinstance(run_id, str) or not isinstance(cell, dict):
        raise TypeError("not a run record")
    energy_j = None
    energy = run.get("energy")
    if energy and energy["readings"]:
        energy_j = _finite(sum(_energy_j(r["energy_j"]) for r in energy["readings"]))
    params = run.get("params")
    started = _number(run["started_at_unix_s"])
    count = cell.get("execution_count")
    if count is not None and (type(count) is not int or not _INT64_MIN <= count <= _INT64_MAX):
        raise TypeError("an execution count is a 64-bit integer")
    return (
        _text(run_id),
        journal,
        _text(run["session_id"]),
        _text(run["kind"]),
        _text(run.get("name"), optional=True),
        _text(cell["sha256"]),
        _text(cell.get("cell_id"), optional=True),
        count,
        _text(cell.get("notebook_path"), optional=True),
        _text(run["status"]),
        _text(run.get("error_type"), optional=True),
        started,
        iso_utc(started),
        _number(run["wall_time_s"]),
        _number(run["cpu_time_s"]),
        energy_j,
        json.dumps({p["name"]: p["value"] for p in params}) if params else None,
        _text(prov_path, optional=True),
        None,  # its line is kept whole here, in `records`
        record_json,  # a journal line: json.dumps wrote it as ASCII
    )


def row_of_cell(
    journal: str, entry: dict[str, Any], session_id: str, notebook_path: Any, offset: int
) -> tuple[Any, ...]:
    """The index row (`_CELL_COLUMNS`) of a plain cell's compact journal line
    (`codec.cell_entry`) that starts at byte `offset` of the journal; no copy of the line is
    kept."""
    started = _number(entry["t"])
    wall_ns, cpu_ns = entry["w"], entry["c"]
    if type(wall_ns) is not int or type(cpu_ns) is not int:
        raise TypeError("a cell's durations are whole nanoseconds")
    count = entry.get("ec")
    if count is not None and (type(count) is not int or not _INT64_MIN <= count <= _INT64_MAX):
        raise TypeError("an execution count is a 64-bit integer")
    source = entry["src"]
    if type(source) is not str:
        raise TypeError("a cell's source is text")
    return (
        _text(cell_run_id(entry["n"], session_id)),
        journal,
        _text(session_id),
        _text(entry["sha"]),
        _text(entry.get("id"), optional=True),
        count,
        _text(notebook_path, optional=True),
        _text(entry.get("st", "ok")),
        _text(entry.get("et"), optional=True),
        started,
        _number(wall_ns / 1e9),
        _number(cpu_ns / 1e9),
        offset,
    )


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# The numbers of a record are times a date can hold (years 1 to 9999), or durations and
# energies far smaller: beyond this range a record is not ours.
_UNIX_S_RANGE = (-62_135_596_800.0, 253_402_300_799.0)
_NON_FINITE = ("nan", "inf", "-inf")  # how the journal writes them (strict JSON)


def _number(value: Any) -> float:
    """A finite number of a record (not text, not bool); ValueError/TypeError otherwise."""
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not _UNIX_S_RANGE[0] <= number <= _UNIX_S_RANGE[1]:
        raise ValueError("a number out of any record's range")
    return number


def _energy_j(value: Any) -> float:
    """An energy figure: a number, or a non-finite one as the journal writes it."""
    if value in _NON_FINITE:
        return float(value)
    return _number(value)


def _text(value: Any, optional: bool = False) -> Any:
    """A text column: SQLite needs valid UTF-8, so a lone surrogate (a path decoded with
    surrogateescape) is kept as its `\\udcxx` escape rather than losing the record."""
    if value is None and optional:
        return None
    if type(value) is not str:
        raise TypeError(f"expected text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return utf8_safe(value)
    return value


def _validated_row(journal: str, entry: dict[str, Any], line: str) -> tuple[Any, ...]:
    """A row for a `close` line read back from a journal, rejecting what `read_journal` would."""
    run = entry["run"]
    if not isinstance(run, dict):
        raise TypeError("not a run record")
    if run.keys() - _PLAIN_KEYS:
        run_from_dict(run)  # a full record: check it decodes, as `Store.runs()` will decode it
    else:
        CellRef(**run["cell"])
        if "ended_at_unix_s" not in run:  # required by run_from_dict
            raise KeyError("ended_at_unix_s")
    prov_path = entry.get("prov_path")
    if prov_path is not None and not isinstance(prov_path, str):
        raise TypeError("bad prov_path")
    return row_of_record(journal, run, prov_path, line)


def _cell_context(session_json: str | None) -> tuple[str, Any] | None:
    """The session id and notebook path that a journal's compact cell lines leave out."""
    try:
        info = session_from_dict(json.loads(session_json or ""))
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
        return None
    return info.session_id, info.notebook_path


def _upsert(
    connection: sqlite3.Connection,
    rows: Sequence[tuple[Any, ...]],
    cells: Sequence[tuple[Any, ...]] = (),
) -> int:
    """`rows` as `row_of_record` makes them (the listed columns, then the full record) and
    plain cells' `cells` as `row_of_cell` does. A row SQLite refuses is skipped, not the
    batch; returns how many were."""
    try:
        connection.executemany(_UPSERT_RUN, (row[:-1] for row in rows))
        connection.executemany(
            _UPSERT_RECORD, ((row[0], row[-1]) for row in rows if row[-1] is not None)
        )
        connection.executemany(_UPSERT_CELL, cells)
        return 0
    except (sqlite3.InterfaceError, sqlite3.IntegrityError, OverflowError, ValueError):
        pass
    refused = 0
    for row in rows:  # the slow way, only after a refusal: upserts are idempotent
        try:
            connection.execute(_UPSERT_RUN, row[:-1])
            if row[-1] is not None:
                connection.execute(_UPSERT_RECORD, (row[0], row[-1]))
        except (sqlite3.InterfaceError, sqlite3.IntegrityError, OverflowError, ValueError):
            refused += 1
    for cell in cells:
        try:
            connection.execute(_UPSERT_CELL, cell)
        except (sqlite3.InterfaceError, sqlite3.IntegrityError, OverflowError, ValueError):
            refused += 1
    return refused


def _forget_journal(connection: sqlite3.Connection, journal: str) -> None:
    connection.execute(
        "DELETE FROM records WHERE run_id IN (SELECT run_id FROM runs WHERE journal = ?)",
        (journal,),
    )
    connection.execute("DELETE FROM runs WHERE journal = ?", (journal,))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- connections -----------------------------------------------------------------------------


def _connect(path: Path | None, modes: StoreModes = PRIVATE) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, with a busy timeout."""
    if path is None:
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        if not path.exists():
            # Created 0600 like every other file of the store; SQLite gives its -wal and -shm
            # files the same permissions.
            with contextlib.suppress(FileExistsError):
                os.close(open_store_file(path, os.O_RDWR | os.O_EXCL, modes))
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if path is not None:
            connection.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL skips the fsync per commit; a lost tail is rebuilt from journals.
            connection.execute("PRAGMA synchronous = NORMAL")
        _ensure_schema(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _ensure_schema(connection: sqlite3.Connection) -> None:
    row = None
    with contextlib.suppress(sqlite3.OperationalError):  # no meta table yet
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is not None and row[0] == SCHEMA_VERSION:
        return
    with _transaction(connection):
        row = None
        with contextlib.suppress(sqlite3.OperationalError):
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0] == SCHEMA_VERSION:
            return
        if row is not None:  # another version's layout: it is derived data, start again
            for table in ("runs", "records", "sessions", "meta"):
                connection.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, taken at once (IMMEDIATE) so that the busy timeout applies."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def parse_count(text: str) -> int:
    """A `--last N` given on a command line (an argparse `type`): a whole number from 0 to
    `MAX_COUNT`, else the usage error that names the limits."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r:.40} is not a whole number") from None
    if not 0 <= count <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text:.40} is not a count from 0 to {MAX_COUNT:,}")
    return count


def is_corrupt(error: sqlite3.Error) -> bool:
    """Garbage or a damaged file (not a lock or a permission problem)."""
    if isinstance(error, sqlite3.OperationalError):
        return False
    return isinstance(error, sqlite3.DatabaseError)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _fails_check(path: Path) -> bool:
    """Whether SQLite's `quick_check` finds the index file damaged (read-only look)."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        ) as connection:
            return bool(connection.execute("PRAGMA quick_check").fetchall() != [("ok",)])
    except sqlite3.Error as error:
        return is_corrupt(error)


def discard_index_file(path: Path, inode: int | None) -> None:
    """Remove a corrupt index (and its side files), unless someone already replaced it."""
    if inode is not None and _inode(path) != inode:
        return
    for suffix in ("", *_SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


# -- the reader ------------------------------------------------------------------------------


class RunIndex:
    """The index of one store, brought up to date from the journals before each answer."""

    def __init__(self, store_root: Path, connection: sqlite3.Connection, in_memory: bool) -> None:
        self.store_root = store_root
        self.in_memory = in_memory
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store_root: Path, modes: StoreModes = PRIVATE) -> RunIndex:
        """The store's index file, recreated if it is not a database; an in-memory index if
        it cannot be opened for writing here."""
        path = index_path(store_root)
        inode = _inode(path)
        try:
            return cls(store_root, _connect(path, modes), in_memory=False)
        except sqlite3.Error as error:
            if not is_corrupt(error):
                return cls.in_memory_index(store_root)
        discard_index_file(path, inode)
        try:
            index = cls(store_root, _connect(path, modes), in_memory=False)
        except sqlite3.Error:
            return cls.in_memory_index(store_root)
        return index

    @classmethod
    def in_memory_index(cls, store_root: Path) -> RunIndex:
        return cls(store_root, _connect(None), in_memory=True)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catching up ----------------------------------------------------------------------

    def refresh(self) -> RefreshStats:
        """Index what the journals hold and the index does not: new lines of known journals,
        new journals, journals rewritten shorter; forget sessions whose folder is gone."""
        stats = RefreshStats()
        on_disk = _journal_sizes(self.store_root / "sessions")
        with self._lock:
            connection = self._connection
            known = dict(connection.execute("SELECT journal, journal_offset FROM sessions"))
            if all(known.get(j) == size for j, size in on_disk.items()) and known.keys() <= set(
                on_disk
            ):
                return stats
            with _transaction(connection):
                # Read again inside the transaction: a writer may have moved on meanwhile.
                known = dict(connection.execute("SELECT journal, journal_offset FROM sessions"))
                for journal in known.keys() - set(on_disk):
                    _forget_journal(connection, journal)
                    connection.execute("DELETE FROM sessions WHERE journal = ?", (journal,))
                for journal, size in sorted(on_disk.items()):
                    offset = known.get(journal)
                    if offset == size:
                        continue
                    if offset is not None and offset > size:  # rewritten: read it again
                        _forget_journal(connection, journal)
                        offset = None
                    self._catch_up(journal, offset, stats)
        return stats

    def _catch_up(self, journal: str, offset: int | None, stats: RefreshStats) -> None:
        connection = self._connection
        start = offset or 0
        path = self.store_root / "sessions" / journal / "journal.jsonl"
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                data = handle.read()
        except OSError:
            return
        # Only whole lines: the writer may be in the middle of one.
        complete = data.rfind(b"\n") + 1
        stats.journals_read += 1
        session_json: str | None = None
        # Compact cell lines need their session (its id and notebook): the one indexed before,
        # until this stretch of the journal has its own session line.
        cell_context: tuple[str, Any] | None = None
        if start:
            known = connection.execute(
                "SELECT session_json FROM sessions WHERE journal = ?", (journal,)
            ).fetchone()
            cell_context = _cell_context(known[0] if known else None)
        rows: list[tuple[Any, ...]] = []
        cells: list[tuple[Any, ...]] = []
        documents: list[tuple[str, str]] = []
        position = 0
        while position < complete:
            end = data.index(b"\n", position) + 1
            raw, line_start = data[position:end], start + position
            position = end
            if raw.startswith(_UNDER_WAY_PREFIXES) or not raw.strip():
                continue
            stats.lines_parsed += 1
            line = raw.decode("utf-8", errors="replace")
            try:
                entry = json.loads(line)
                event = entry["event"]
                if event == CELL_EVENT:
                    if cell_context is None:
                        raise KeyError("a cell line before its session line")
                    cells.append(row_of_cell(journal, entry, *cell_context, line_start))
                elif event == "close":
                    rows.append(_validated_row(journal, entry, line))
                elif event == "document":
                    path_text = entry["path"]
                    if not isinstance(path_text, str):
                        raise TypeError("bad path")
                    documents += [(path_text, run_id) for run_id in entry["run_ids"]]
                elif event == "session":
                    info = session_from_dict(entry["session"])
                    session_json = json.dumps(entry["session"])
                    cell_context = (info.session_id, info.notebook_path)
            except (
                ValueError,
                KeyError,
                TypeError,
                RecursionError,
                AttributeError,
                OverflowError,
            ):
                stats.bad_lines += 1
        connection.execute(
            "INSERT INTO sessions (journal, session_json, journal_offset) VALUES (?, ?, ?) "
            "ON CONFLICT (journal) DO UPDATE SET journal_offset = excluded.journal_offset, "
            "session_json = COALESCE(excluded.session_json, sessions.session_json)",
            (journal, session_json, start + complete),
        )
        stats.bad_lines += _upsert(connection, rows, cells)
        connection.executemany(_SET_DOCUMENT, documents)

    def apply_annotations(self, deleted: Collection[str], tags: Iterable[tuple[str, str]]) -> None:
        """Apply the store's annotations (store/annotations.py), which live outside the index
        so that they survive its rebuild: deleted runs' rows are dropped (catching up from
        the journals may have added them again), and (run id, tag) pairs fill a per-connection
        table that `RunQuery.tag` filters on."""
        with self._lock:
            connection = self._connection
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS run_tags "
                "(run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (run_id, tag))"
            )
            # A deferred transaction touches only the temp database (no lock on the index
            # file): one transaction, not one per row.
            connection.execute("BEGIN")
            try:
                connection.execute("DELETE FROM temp.run_tags")
                connection.executemany("INSERT OR IGNORE INTO temp.run_tags VALUES (?, ?)", tags)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            gone = sorted(deleted)
            present: list[str] = []
            for start in range(0, len(gone), 500):  # SQLite's limit on bound variables
                chunk = gone[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                present += [
                    row[0]
                    for row in connection.execute(
                        f"SELECT run_id FROM runs WHERE run_id IN ({marks})", chunk
                    )
                ]
            if present:  # a write transaction only when there is something to drop
                with _transaction(connection):
                    for run_id in present:
                        connection.execute("DELETE FROM records WHERE run_id = ?", (run_id,))
                        connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # -- answering ------------------------------------------------------------------------

    def query(self, query: RunQuery = RunQuery()) -> list[IndexedRun]:
        """The runs that match, oldest first."""
        where, args = query.where()
        if query.last is None:
            # Sorting here beats reading the table in index order (~30 % of a full listing).
            sql = f"SELECT {_LISTED} FROM runs{where}"
        elif query.last <= 0:
            return []
        else:
            sql = (
                f"SELECT {_LISTED} FROM runs{where} "
                f"ORDER BY started_at_unix_s DESC, run_id DESC LIMIT {int(query.last)}"
            )
        with self._lock:
            rows = self._connection.execute(sql, args).fetchall()
        if query.last is None:
            rows.sort(key=_START_ORDER)
        else:
            rows.reverse()
        root = self.store_root
        # Make each path (costly in pathlib) once.
        paths = {relpath: root / relpath for relpath in {row[16] for row in rows} if relpath}
        make = IndexedRun._make
        return [
            make(
                (
                    *row[:11],
                    row[11] or iso_utc(row[10]),
                    *row[12:15],
                    tuple(json.loads(row[15]).items()) if row[15] else (),
                    paths.get(row[16]),
                )
            )
            for row in rows
        ]

    def count(self, query: RunQuery = RunQuery()) -> int:
        """How many runs match the query's filters (ignoring `last`)."""
        where, args = query.where()
        with self._lock:
            (total,) = self._connection.execute(
                f"SELECT COUNT(*) FROM runs{where}", args
            ).fetchone()
        return int(total)

    def records(
        self,
        run_ids: Sequence[str] | None = None,
        session_id: str | None = None,
        _retried: bool = False,
    ) -> list[StoredRecord]:
        """Full records, oldest first: all of them, those of one session, or of `run_ids`.
        A plain cell's is its compact journal line, read from the journal."""
        rows = self._record_rows(run_ids, session_id)
        found: list[StoredRecord] = []
        stale: set[str] = set()
        with _JournalLines(self.store_root) as lines:
            for record_json, prov_path, session_json, journal, offset, run_id in rows:
                if record_json is None:
                    record_json = lines.cell_line(journal, offset, run_id, session_json)
                    if record_json is None:
                        stale.add(journal)
                        continue
                found.append(StoredRecord(record_json, prov_path, session_json))
        if stale:
            # A journal edited in place (a line inserted before others): the offsets this
            # index holds point elsewhere now. Index those journals again and answer again.
            with self._lock, _transaction(self._connection):
                for journal in sorted(stale):
                    _forget_journal(self._connection, journal)
                    self._catch_up(journal, None, RefreshStats())
            return self.records(run_ids, session_id, _retried=True) if not _retried else found
        return found

    def _record_rows(
        self, run_ids: Sequence[str] | None, session_id: str | None
    ) -> list[tuple[Any, ...]]:
        sql = (
            "SELECT c.record_json, r.prov_path, s.session_json, r.journal, r.line_offset, "
            "r.run_id FROM runs r "
            "LEFT JOIN records c ON c.run_id = r.run_id "
            "LEFT JOIN sessions s ON s.journal = r.journal "
            "WHERE (c.record_json IS NOT NULL OR r.line_offset IS NOT NULL)"
        )
        order = " ORDER BY r.started_at_unix_s, r.run_id"
        with self._lock:
            if run_ids is None and session_id is None:
                rows = self._connection.execute(sql + order).fetchall()
            elif run_ids is None:
                rows = self._connection.execute(
                    sql + " AND r.session_id = ?" + order, (session_id,)
                ).fetchall()
            else:
                rows = []
                for run_id in run_ids:
                    rows += self._connection.execute(sql + " AND r.run_id = ?", (run_id,))
        return rows

    def matching_ids(self, run_ref: str) -> list[str]:
        """The id equal to `run_ref`, else every id that ends with it."""
        with self._lock:
            exact = self._connection.execute(
                "SELECT run_id FROM runs WHERE run_id = ?", (run_ref,)
            ).fetchall()
            if exact:
                return [exact[0][0]]
            rows = self._connection.execute(
                "SELECT run_id FROM runs WHERE length(run_id) >= ? AND substr(run_id, -?) = ? "
                "ORDER BY started_at_unix_s, run_id",
                (len(run_ref), len(run_ref), run_ref),
            ).fetchall()
        return [row[0] for row in rows]


class _JournalLines:
    """Lines read at byte offsets of the store's journals, each journal opened once."""

    def __init__(self, store_root: Path) -> None:
        self._sessions = store_root / "sessions"
        self._open: dict[str, Any] = {}

    def __enter__(self) -> _JournalLines:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._open.values():
            if handle is not None:
                handle.close()

    def at(self, journal: str, offset: Any) -> str | None:
        """The whole line starting at `offset`, or None (a copied index is untrusted: a
        journal name that is not a folder name, an offset past the end, a partial line)."""
        if type(offset) is not int or offset < 0 or not valid_id(journal):
            return None
        if journal not in self._open:
            try:
                self._open[journal] = (self._sessions / journal / "journal.jsonl").open("rb")
            except OSError:
                self._open[journal] = None
        handle = self._open[journal]
        if handle is None:
            return None
        try:
            handle.seek(offset)
            raw = handle.readline(MAX_LINE_BYTES + 1)
        except OSError:
            return None
        if not isinstance(raw, bytes) or not raw.endswith(b"\n"):
            return None
        return raw.decode("utf-8", errors="replace")

    def cell_line(
        self, journal: str, offset: Any, run_id: str, session_json: str | None
    ) -> str | None:
        """The compact line of the plain cell `run_id` at `offset`, or None where the line
        there is not that cell's (the journal was edited since it was indexed)."""
        line = self.at(journal, offset)
        context = _cell_context(session_json)
        if line is None or context is None:
            return None
        try:
            entry = json.loads(line)
            if entry["event"] != CELL_EVENT or cell_run_id(entry["n"], context[0]) != run_id:
                return None
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        return line


def _journal_sizes(sessions_dir: Path) -> dict[str, int]:
    """Each session folder's journal size in bytes (one stat each)."""
    sizes: dict[str, int] = {}
    try:
        entries = list(os.scandir(sessions_dir))
    except OSError:
        return sizes
    for entry in entries:
        try:
            if entry.is_dir():
                sizes[entry.name] = os.stat(os.path.join(entry.path, "journal.jsonl")).st_size
        except OSError:
            continue
    return sizes


# -- the writer's side -----------------------------------------------------------------------


@dataclass(slots=True)
class IndexBatch:
    """What one drain of a store writer journaled, to be indexed in one transaction."""

    session_json: str | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    cells: list[tuple[Any, ...]] = field(default_factory=list)
    documents: list[tuple[str, str]] = field(default_factory=list)
    # False when a journaled record could not be made a row: the batch then leaves the
    # journal offset where it is, and readers index that record from the journal.
    complete: bool = True

    def add_close(
        self, journal: str, run: dict[str, Any], prov_path: str | None, line: str
    ) -> None:
        try:
            self.rows.append(row_of_record(journal, run, prov_path, line.rstrip("\n")))
        except (KeyError, TypeError, ValueError, OverflowError):
            self.complete = False

    def add_cell(self, *row: Any) -> None:
        """A plain cell's row (`_CELL_COLUMNS`), made by this writer from the facts it
        journaled, so not checked as a line read back is (the writer's per-cell cost); only
        its text from outside (cell id, notebook path, error type) is made fit for SQLite."""
        cell_id, notebook_path, error_type = row[4], row[6], row[8]
        if cell_id is None and notebook_path is None and error_type is None:
            self.cells.append(row)
            return
        try:
            self.cells.append(
                (
                    *row[:4],
                    _text(cell_id, optional=True),
                    row[5],
                    _text(notebook_path, optional=True),
                    row[7],
                    _text(error_type, optional=True),
                    *row[9:],
                )
            )
        except TypeError:
            self.complete = False

    def add_document(self, path: str, run_ids: Iterable[str]) -> None:
        self.documents += [(path, run_id) for run_id in run_ids]

    def __bool__(self) -> bool:
        return bool(self.rows or self.cells or self.documents or self.session_json is not None)


class IndexWriter:
    """One store writer's connection to the index, opened lazily in the writer thread.

    `commit` upserts a batch and moves the session's journal offset to `journal_end`, but only
    when every journal line from the stored offset on is covered by batches this writer has
    indexed since `clean_since` (else readers catch up from the journal, as they always can).
    """

    def __init__(self, store_root: Path, journal: str, modes: StoreModes = PRIVATE) -> None:
        self.path = index_path(store_root)
        self.journal = journal
        self.modes = modes
        self._connection: sqlite3.Connection | None = None
        self._inode: int | None = None

    def commit(
        self, batch: IndexBatch, clean_since: int | None, journal_end: int, restart: bool = False
    ) -> bool:
        """False when the index cannot take the batch now (it is derived data: readers catch
        up from the journal).

        `restart`: the journal was removed and begun again, so what the index held of it is
        forgotten first and its offset counts from the new file's start."""
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError):
            self.close()
            return False
        try:
            with _transaction(connection):
                if restart:
                    _forget_journal(connection, self.journal)
                    connection.execute(
                        "UPDATE sessions SET journal_offset = 0 WHERE journal = ?", (self.journal,)
                    )
                row = connection.execute(
                    "SELECT journal_offset FROM sessions WHERE journal = ?", (self.journal,)
                ).fetchone()
                stored = row[0] if row else 0
                covered = batch.complete and clean_since is not None and stored >= clean_since
                offset = max(stored, journal_end) if covered else stored
                connection.execute(
                    "INSERT INTO sessions (journal, session_json, journal_offset) "
                    "VALUES (?, ?, ?) ON CONFLICT (journal) DO UPDATE SET "
                    "journal_offset = excluded.journal_offset, "
                    "session_json = COALESCE(excluded.session_json, sessions.session_json)",
                    (self.journal, batch.session_json, offset),
                )
                _upsert(connection, batch.rows, batch.cells)
                connection.executemany(_SET_DOCUMENT, batch.documents)
        except (sqlite3.Error, OSError):
            self.close()
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        # A reader may have replaced a corrupt index: follow the file, not the old inode.
        if self._connection is not None and _inode(self.path) != self._inode:
            self.close()
        if self._connection is None:
            if not self.path.parent.is_dir():
                raise FileNotFoundError(self.path.parent)
            self._connection = _connect(self.path, self.modes)
            self._inode = _inode(self.path)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


def answer_from_index(
    store_root: Path,
    modes: StoreModes,
    answer: Callable[[RunIndex], T],
    report: Callable[[int], None],
) -> T:
    """`answer` from an up-to-date index: rebuilt when corrupt, in memory when the file
    cannot be written here (a read-only copy of a store)."""
    if not (store_root / "sessions").is_dir():
        # Nothing recorded yet: answer from an empty index, and create no files.
        with RunIndex.in_memory_index(store_root) as empty:
            return answer(empty)
    for attempt in range(2):
        index = RunIndex.open(store_root, modes)
        try:
            report(index.refresh().bad_lines)
            return answer(index)
        # Values no writer of ours stores (text where a number belongs, a params column
        # that is not a JSON object): the index was damaged; it is rebuilt like a corrupt one.
        except (sqlite3.Error, ValueError, TypeError, AttributeError) as error:
            # An error of SQLite's may come from the question, not the file: a shared index is
            # discarded only when SQLite's own check finds the file damaged.
            damaged = not isinstance(error, sqlite3.Error) or (
                is_corrupt(error) and _fails_check(index_path(store_root))
            )
            if attempt == 0 and damaged and not index.in_memory:
                index.close()
                discard_index_file(index_path(store_root), None)
                continue
        finally:
            index.close()
        break
    with RunIndex.in_memory_index(store_root) as fallback:
        report(fallback.refresh().bad_lines)
        return answer(fallback)
