"""The store writer's contract: after `flush()` returns True, everything submitted before it
is on disk and readable; plain cells are journaled in the same shape as full records."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_prov4ml.journal import read_journal
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.recorder import ClosedCell, OpenWindow, build_run
from jupyter_prov4ml.records import SessionInfo
from jupyter_prov4ml.store import Store
from jupyter_prov4ml.writer import CELLS_PER_DOCUMENT, StoreWriter

SESSION = SessionInfo("s1", "u", 0.0, (("python", "3"),), "h", "p", "cpu", 2, 1, (), "nb.ipynb")


def plain_cell(n: int) -> ClosedCell:
    window = OpenWindow(f"s1-{n:05d}", f"x = {n}", "0" * 64, f"id{n}", 100.0 + n, 10**9, 10**8)
    return ClosedCell(window, 2 * 10**9, 3 * 10**8, "ok", None, n)


def test_flush_means_readable(tmp_path: Path) -> None:
    """Each flush makes every earlier record readable at once (regression: the marker used to
    be signalled before the journal's buffer reached the OS)."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=0.001)
    writer.start()
    try:
        for n in range(200):
            writer.closed_cell(plain_cell(n))
            assert writer.flush(timeout_s=10, session_document=False)
            state = read_journal(store.journal_path("s1"))
            assert len(state.closed) == n + 1
    finally:
        writer.close()


def test_hand_written_journal_form_matches_the_record(tmp_path: Path) -> None:
    """The fast journal encoding of a plain cell reads back as exactly the record that
    `build_run` makes from the same facts."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices())
    cell = plain_cell(7)
    writer.closed_cell(cell)
    assert writer.close()
    ((journaled, _),) = read_journal(store.journal_path("s1")).closed.values()
    expected = build_run(
        "s1", "nb.ipynb", cell.window, cell.ended_perf_ns, cell.ended_cpu_ns, "cell", "ok", None, 7
    )
    assert journaled == expected


def test_cells_documents_are_bounded_and_indexed(tmp_path: Path) -> None:
    """Plain cells go into documents of at most CELLS_PER_DOCUMENT cells, written once each,
    and the store knows which document holds each cell."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=60)
    writer.start()
    total = CELLS_PER_DOCUMENT + 5
    for n in range(total):
        writer.closed_cell(plain_cell(n))
    started = time.perf_counter()
    assert writer.close(timeout_s=30)
    assert time.perf_counter() - started < 30
    documents = sorted(store.session_dir("s1").glob("cells-*.prov.json"))
    assert [d.name for d in documents] == ["cells-0000.prov.json", "cells-0001.prov.json"]
    runs = store.runs()
    assert len(runs) == total
    assert runs[0].prov_path == documents[0] and runs[-1].prov_path == documents[1]
