"""The monitor process from a real shell: started once by the first %%provrun, stopped at
unload; where it cannot start, one line says so and runs are sampled in the kernel alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs, extension_of
from jupyter_prov4ml.kernel.monitor_client import MonitorHandle, MonitorUnavailable

CELL = "%%provrun --no-graph --interval 0.01\nx = sum(range(1000))"


def test_one_monitor_started_by_the_first_provrun_and_stopped_at_unload(loaded: Any) -> None:
    """No monitor before a %%provrun; the same one for the next; none left after unload."""
    extension = extension_of(loaded)
    assert extension.monitor is None
    assert loaded.run_cell(CELL).success
    monitor = extension.monitor
    assert monitor is not None and monitor.alive()
    assert loaded.run_cell(CELL).success
    assert extension.monitor is monitor
    loaded.run_line_magic("unload_ext", "jupyter_prov4ml")
    assert not monitor.alive() and extension.monitor is None


def test_without_a_monitor_one_line_and_the_run_is_saved(
    loaded: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A monitor that cannot start (injected): one line for the session, not one per run;
    both runs are saved `ok` with the kernel sampler's samples."""

    def refuse(cls: Any, *args: Any) -> MonitorHandle:
        raise MonitorUnavailable("injected")

    monkeypatch.setattr(MonitorHandle, "start", classmethod(refuse))
    assert loaded.run_cell(CELL).success
    assert loaded.run_cell(CELL).success
    err = capsys.readouterr().err
    assert err.count("no monitor process (injected)") == 1, err
    assert "Traceback" not in err
    extension_of(loaded).writer.flush()
    runs = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert all(r["hardware"]["sample_count"] >= 1 for r in runs)
