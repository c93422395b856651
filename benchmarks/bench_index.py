"""Listing a store of 10,000 runs through the run index, against reading every journal (what
`Store.runs()` did before the index), both timed in this run.

Proves: (1) `jupyter-prov4ml list`'s path (index query → rows → table) answers in <= 200 ms
warm; (2) so does `%prov list` in a real shell (flush, query, table, HTML); (3) catching up on
100 runs a writer did not index (a killed kernel) stays within 200 ms. Reports, with no
target: (4) the cold path, where the index is missing and rebuilt from the journals (a store
copied from another machine); (5) `Store.runs()` (full records) and `Store.find()` warm;
(6) what indexing costs the store writer thread per closed cell.

The store is written by the real `StoreWriter` (10 kernel sessions × 1,000 plain cells, with
a few %%provrun-like records carrying parameters and energy). Run alone:
`python benchmarks/bench_index.py`.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import Result, checked, interleave, median, print_report
from _shell import isolated_shell, load_extension

SESSIONS = 10
CELLS_PER_SESSION = 1_000
FULL_RUNS_PER_SESSION = 3
LIST_TARGET_MS = 200.0
CATCH_UP_RUNS = 100
ROUNDS = 7
MS = 1e3
US = 1e6


def _session(session_id: str) -> Any:
    from jupyter_prov4ml.records import SessionInfo

    return SessionInfo(
        session_id,
        "bench",
        1.7e9,
        (("python", "3.11"), ("jupyter_prov4ml", "0.1.0")),
        "node-1",
        "Linux",
        "CPU",
        16,
        1 << 34,
        (),
        "train.ipynb",
    )


def _cell(session_id: str, n: int) -> Any:
    from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow

    source = f"loss_{n} = train_step(batch_{n})\nprint(loss_{n})\n"
    window = OpenWindow(
        f"{session_id}-{n:05d}", source, f"{n:064x}", f"cell-{n % 40}", 1.7e9 + n, 0, 0
    )
    status = "failed" if n % 97 == 0 else "ok"
    return ClosedCell.of(window, 5 * 10**7, 4 * 10**7, status, None, n)


def _full_run(session_id: str, n: int) -> Any:
    from jupyter_prov4ml.records import CellRef, CellRun, EnergyLedger, EnergyReading, Param

    return CellRun(
        run_id=f"{session_id}-{n:05d}",
        session_id=session_id,
        kind="provrun",
        cell=CellRef(f"{n:064x}", "%%provrun --name sweep\nlr = 0.1\n", "train", n),
        started_at_unix_s=1.7e9 + n,
        ended_at_unix_s=1.7e9 + n + 30,
        wall_time_s=30.0,
        cpu_time_s=29.0,
        status="ok",
        name=f"sweep-{n}",
        params=(Param("lr", 0.1 * n), Param("batch_size", 64, "literal")),
        energy=EnergyLedger((EnergyReading("cpu", "cpu", 12.5, "estimated", 30.0),), 481.0),
    )


def write_store(root: Path) -> float:
    """10,000 runs written by real store writers, one per kernel session; seconds taken."""
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    started = time.perf_counter()
    for k in range(SESSIONS):
        session_id = f"20260101T{k:06d}-bench{k}"
        writer = StoreWriter(Store(root), _session(session_id), Notices(), period_s=60)
        writer.start()
        full = {CELLS_PER_SESSION * (i + 1) // (FULL_RUNS_PER_SESSION + 1) for i in range(3)}
        for n in range(1, CELLS_PER_SESSION + 1):
            if n in full:
                writer.submit_run(_full_run(session_id, n), RunSeries())
            else:
                writer.closed_cell(_cell(session_id, n))
        if not writer.close(timeout_s=300):
            raise RuntimeError("the store writer did not finish")
    return time.perf_counter() - started


def drop_index(root: Path) -> None:
    for path in root.glob("index.sqlite*"):
        path.unlink()


def list_path(root: Path) -> str:
    """What `jupyter-prov4ml list` does: query the index, make rows, print a table."""
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.views.run_table import RunTable, run_row

    return repr(RunTable([run_row(run) for run in Store(root).query()]))


def journal_scan(root: Path) -> str:
    """The baseline: read every journal in full and sort (the store before the index)."""
    from jupyter_prov4ml.store.layout import Store, StoredRun
    from jupyter_prov4ml.views.run_table import RunTable, run_row

    store = Store(root)
    found = []
    for _, state in store.journals():
        for run, prov in state.closed.values():
            prov = prov or state.documents.get(run.run_id)
            found.append(StoredRun(run, state.session, root / prov if prov else None))
    found.sort(key=lambda stored: (stored.run.started_at_unix_s, stored.run.run_id))
    return repr(RunTable([run_row(s) for s in found]))


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took, starting without garbage left by the previous arm to collect."""
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def append_unindexed_runs(root: Path, count: int, first: int) -> None:
    """Journal lines a killed kernel left behind: never indexed by their writer."""
    from jupyter_prov4ml.store.codec import encode_line, run_to_dict

    journal = next(root.glob("sessions/*/journal.jsonl"))
    session_id = journal.parent.name
    with journal.open("a", encoding="utf-8") as out:
        for n in range(first, first + count):
            run = _full_run(session_id, n)
            out.write(encode_line("close", {"run": run_to_dict(run), "prov_path": None}))


@contextlib.contextmanager
def index_writes_disabled() -> Iterator[None]:
    """The writer with its index commits skipped: the baseline of what indexing costs it."""
    from jupyter_prov4ml.store import index

    original = index.IndexWriter.commit
    index.IndexWriter.commit = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        index.IndexWriter.commit = original  # type: ignore[method-assign]


def writer_cost_per_cell(tmp: Path) -> tuple[float, float]:
    """Seconds per plain cell for a writer to journal (and index) 1,500 queued cells."""
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    cells = 1_500
    counter = iter(range(10**6))

    def one(indexed: bool) -> float:
        session_id = f"w{next(counter)}"
        writer = StoreWriter(Store(tmp / "writer"), _session(session_id), Notices(), period_s=60)
        for n in range(cells):
            writer.closed_cell(_cell(session_id, n))
        with contextlib.nullcontext() if indexed else index_writes_disabled():
            start = time.perf_counter()
            writer.flush(timeout_s=60)  # drains in this thread
            elapsed = time.perf_counter() - start
        writer.close()
        return elapsed / cells

    samples = interleave({"off": lambda: one(False), "on": lambda: one(True)}, ROUNDS)
    return median(samples["on"]), median(samples["off"])


def prov_list_in_a_shell(root: Path) -> tuple[float, float]:
    """`%prov list` (newest runs) and `%prov list --all` rendered as HTML, in a real shell
    whose store holds the 10,000 runs; seconds each."""
    import os

    from _shell import STORE_ENV

    with isolated_shell() as shell:
        os.environ[STORE_ENV] = str(root)
        load_extension(shell)

        def newest() -> None:
            table = shell.run_line_magic("prov", "list")
            table._repr_html_()

        def everything() -> None:
            table = shell.run_line_magic("prov", "list --all")
            table._repr_html_()

        newest()
        samples = interleave(
            {"newest": lambda: timed(newest), "all": lambda: timed(everything)}, ROUNDS
        )
    return median(samples["newest"]), median(samples["all"])


def main() -> list[Result]:
    from jupyter_prov4ml.store.layout import Store

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-index-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "store"
        written_s = write_store(root)
        total = len(Store(root).query())
        expected = SESSIONS * CELLS_PER_SESSION
        if total != expected:
            raise RuntimeError(f"expected {expected} runs in the store, found {total}")
        if not list_path(root).startswith("run_id"):
            raise RuntimeError("the list path printed no table")

        def cold() -> float:
            drop_index(root)
            return timed(lambda: list_path(root))

        samples = interleave(
            {
                "warm": lambda: timed(lambda: list_path(root)),
                "cold": cold,
                "scan": lambda: timed(lambda: journal_scan(root)),
            },
            ROUNDS,
        )
        list_path(root)  # leave a built index behind the cold rounds
        scan_ms = median(samples["scan"]) * MS
        results.append(
            checked(
                f"list {expected:,} runs, warm index",
                median(samples["warm"]) * MS,
                "ms",
                scan_ms,
                LIST_TARGET_MS,
                target_is_overhead=False,
                note=f"baseline: every journal read in full; store written in {written_s:.1f} s "
                "by real StoreWriters",
            )
        )
        results.append(
            checked(
                f"list {expected:,} runs, index rebuilt",
                median(samples["cold"]) * MS,
                "ms",
                scan_ms,
                None,
                note="index.sqlite deleted before each round: a store copied from elsewhere",
            )
        )

        caught: list[float] = []
        for round_number in range(ROUNDS):
            append_unindexed_runs(root, CATCH_UP_RUNS, 100_000 + round_number * CATCH_UP_RUNS)
            caught.append(timed(lambda: list_path(root)))
        results.append(
            checked(
                f"list after {CATCH_UP_RUNS} unindexed runs",
                median(caught) * MS,
                "ms",
                median(samples["warm"]) * MS,
                LIST_TARGET_MS,
                target_is_overhead=False,
                note="journal lines no writer indexed (a killed kernel): read from the tail only",
            )
        )

        store = Store(root)
        store.runs()
        some_id = store.query()[len(store.query()) // 2].run_id
        runs_s = median(timed(store.runs) for _ in range(3))
        find_s = median(timed(lambda: store.find(some_id[-8:])) for _ in range(ROUNDS))
        results.append(
            checked("Store.runs(), full records, warm", runs_s * MS, "ms", scan_ms, None)
        )
        results.append(checked("Store.find(suffix), warm", find_s * MS, "ms", None, None))

        newest_s, all_s = prov_list_in_a_shell(root)
        results.append(
            checked(
                "%prov list (newest 200) + HTML",
                newest_s * MS,
                "ms",
                None,
                LIST_TARGET_MS,
                target_is_overhead=False,
                note="in a real shell: writer flush, query, table, HTML",
            )
        )
        results.append(
            checked(
                "%prov list --all + HTML",
                all_s * MS,
                "ms",
                None,
                LIST_TARGET_MS,
                target_is_overhead=False,
            )
        )

        on_s, off_s = writer_cost_per_cell(tmp)
        results.append(
            checked(
                "writer per plain cell, index on",
                on_s * US,
                "µs",
                off_s * US,
                None,
                note="writer thread only (never the cell): journal line + index row, "
                "1,500 queued cells per drain; baseline with index commits skipped",
            )
        )
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
