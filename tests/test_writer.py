"""The store writer's contract: after `flush()` returns True, everything submitted before it
is on disk and readable."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_prov4ml.journal import read_journal
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import CellRef, CellRun, SessionInfo
from jupyter_prov4ml.store import Store
from jupyter_prov4ml.writer import StoreWriter

SESSION = SessionInfo("s1", "u", 0.0, (("python", "3"),), "h", "p", "cpu", 2, 1, ())


def plain_run(n: int) -> CellRun:
    cell = CellRef("0" * 64, f"x = {n}", None, n, None)
    return CellRun(f"s1-{n:05d}", "s1", "cell", cell, 1.0, 2.0, 1.0, 0.5, "ok")


def test_flush_means_readable(tmp_path: Path) -> None:
    """Each flush makes every earlier record readable at once (regression: the marker used to
    be signalled before the journal's buffer reached the OS)."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=0.001)
    writer.start()
    try:
        for n in range(200):
            writer.closed(plain_run(n))
            assert writer.flush(timeout_s=10, session_document=False)
            state = read_journal(store.journal_path("s1"))
            assert len(state.closed) == n + 1
    finally:
        writer.close()


def test_close_writes_the_session_document(tmp_path: Path) -> None:
    """Closing the writer writes pending records and the session's PROV document."""
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, SESSION, Notices(), period_s=60)
    writer.start()
    for n in range(3):
        writer.closed(plain_run(n))
    started = time.perf_counter()
    assert writer.close(timeout_s=10)
    assert time.perf_counter() - started < 10
    assert store.session_prov_path("s1").is_file()
    assert len(read_journal(store.journal_path("s1")).closed) == 3
