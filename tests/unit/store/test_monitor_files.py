"""The monitor's files: its sample lines (torn or foreign lines skipped, bounded), its note on
the kernel's death, and recovery folding both into a crashed run."""

from __future__ import annotations

import math
import time
from pathlib import Path

from jupyter_prov4ml.capture.recorder import OpenWindow
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import SessionInfo
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.monitor_files import (
    DeathNote,
    MonitorRow,
    SampleJournal,
    read_death_note,
    read_samples,
    samples_path,
)
from jupyter_prov4ml.store.recovery import recover_store
from jupyter_prov4ml.store.writer import StoreWriter


def test_sample_lines_round_trip_and_skip_damage(tmp_path: Path) -> None:
    path = tmp_path / "monitor" / "r.samples.jsonl"
    journal = SampleJournal(path)
    journal.append(MonitorRow(1.0, 100.0, {"elapsed_s": 0.5, "tree_cpu_percent": math.nan}))
    journal.append(MonitorRow(1.1, 100.1, {"elapsed_s": 0.6, "tree_cpu_percent": 12.5}))
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"t": "x"}\n[1, 2]\n{"t": 1.2, "u": 100.2, "c": {"elapsed_s": 0.7')
    rows = read_samples(path)
    assert [row.columns["elapsed_s"] for row in rows] == [0.5, 0.6]
    assert math.isnan(rows[0].columns["tree_cpu_percent"])
    assert rows[1].columns["tree_cpu_percent"] == 12.5
    assert read_samples(tmp_path / "none") == []


def test_a_full_sample_file_halves_its_rate(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past its line budget, a run's file keeps every other sample (bounded however long)."""
    from jupyter_prov4ml.store import monitor_files

    monkeypatch.setattr(monitor_files, "MAX_SAMPLE_LINES", 10)
    journal = SampleJournal(tmp_path / "s.jsonl")
    for tick in range(100):
        journal.append(MonitorRow(tick, tick, {"elapsed_s": float(tick)}))
    journal.close()
    assert len(read_samples(tmp_path / "s.jsonl")) < 40


def test_death_note_round_trip_and_damage(tmp_path: Path) -> None:
    DeathNote(42, 123.5, "OOM kill").write(tmp_path)
    assert read_death_note(tmp_path) == DeathNote(42, 123.5, "OOM kill")
    (tmp_path / "monitor" / "death.json").write_text('{"kernel_pid": 1, "cause": 5}')
    assert read_death_note(tmp_path) is None


def test_recovery_uses_the_monitors_samples_and_note(tmp_path: Path) -> None:
    """A dead session with one open %%provrun, no checkpoint, the monitor's samples and note:
    the crashed run ends when the monitor last saw the kernel, says why, and keeps the
    monitor's samples."""
    store = Store(tmp_path / "store")
    session = SessionInfo("dead", "me", time.time(), (), "host", "linux", "cpu", 2, 1)
    writer = StoreWriter(store, session, Notices())
    writer.start()
    started = time.time()
    window = OpenWindow("dead-run0", "x = 1", "ab" * 32, "cell-1", started, 0, 0)
    writer.opened(window, "provrun", {"name": "n", "interval_s": 0.1})
    assert writer.flush()
    writer._stop.set()  # the kernel dies: its writer ends without a close
    writer._wake.set()
    assert writer._thread is not None
    writer._thread.join(60)
    assert writer._lock is not None
    writer._lock.release(remove=False)
    session_dir = store.session_dir("dead")
    journal = SampleJournal(samples_path(session_dir, "dead-run0"))
    for tick in range(5):
        journal.append(MonitorRow(tick, started + tick, {"elapsed_s": tick * 0.1}))
    journal.close()
    DeathNote(1, started + 4.5, "OOM kill (the cgroup's oom_kill count rose to 1)").write(
        session_dir
    )
    (run,) = recover_store(store).runs
    assert run.status == "crashed"
    assert run.error_type == "KernelDied: OOM kill (the cgroup's oom_kill count rose to 1)"
    assert run.ended_at_unix_s == started + 4.5
    assert run.hardware is not None and run.hardware.sample_count == 5
    assert list(read_journal(store.journal_path("dead")).closed) == ["dead-run0"]
