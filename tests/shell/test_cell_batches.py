"""Plain cells' records and lineage are made in batches after the cells end (see
`capture/recorder.py`): what a user sees of them must be as if each was made when its cell
ended. Through the real hooks of a loaded IPython shell."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import closed_runs, extension_of, journal_events

WAIT_S = 60.0  # a generous bound on a condition, never a duration the test relies on


def variables_of(run: dict[str, Any]) -> dict[str, tuple[str, str, str | None]]:
    return {
        variable["name"]: (variable["type_name"], variable["description"], variable["value_sha256"])
        for variable in run["variables"]
    }


def test_values_are_described_as_their_cell_left_them(loaded: Any, store_dir: Path) -> None:
    """A list a later cell changes, a string, a number: each is described as it was when the
    cell that bound it ended, however late its record is made."""
    extension = extension_of(loaded)
    sources = [
        "xs = [1, 2]\nn = 5\ns = 'abc'\n",
        "xs.append(3)\nn = n + 1\n",
        "xs.clear()\n",
    ]
    for source in sources:
        loaded.run_cell(source, store_history=True)
    assert extension.recorder.unsettled == len(sources), "a batch, not yet settled"
    assert extension.writer.flush(timeout_s=WAIT_S)
    first, second, _ = [run for run in closed_runs(store_dir) if run["kind"] == "cell"]
    described = variables_of(first)
    assert described["xs"] == ("list", "2 items", None)
    assert described["n"] == ("int", "5", None)
    assert described["s"][:2] == ("str", "3 characters") and described["s"][2]
    assert variables_of(second)["n"] == ("int", "6", None)
    assert second["informed_by"] == [[first["run_id"], ["n", "xs"]]]


def test_batches_keep_execution_order_and_links(loaded: Any, store_dir: Path) -> None:
    """More cells than several batches: records in execution order, each reader informed
    by the cell just before it, a failed cell's unchanged binding not taken as its own."""
    extension = extension_of(loaded)
    count = 3 * extension.recorder.settle_batch + 5
    for index in range(count):
        loaded.run_cell(f"a = {index}" if index % 2 == 0 else "b = a + 1", store_history=True)
    loaded.run_cell("b = a\nraise ValueError('no')", store_history=True)  # rebinds b, fails
    loaded.run_cell("c = 1\nraise ValueError('no')", store_history=True)
    assert extension.writer.flush(timeout_s=WAIT_S)
    runs = [run for run in closed_runs(store_dir) if run["kind"] == "cell"]
    assert len(runs) == count + 2
    assert [run["cell"]["execution_count"] for run in runs] == sorted(
        run["cell"]["execution_count"] for run in runs
    )
    for before, reader in zip(runs[:count:2], runs[1:count:2], strict=False):
        assert reader["informed_by"] == [[before["run_id"], ["a"]]]
        assert variables_of(reader)["b"][1] == str(int(variables_of(before)["a"][1]) + 1)
    failed_rebinding, failed_new = runs[-2:]
    assert failed_rebinding["status"] == "failed"
    assert "b" in variables_of(failed_rebinding)  # the object changed: it did bind it
    assert "c" in variables_of(failed_new)


def test_a_paused_notebook_is_written_without_a_flush(loaded: Any, store_dir: Path) -> None:
    """The last cells before the user stops (fewer than a batch) reach the journal by the
    writer's period alone, with their lineage."""
    loaded.run_cell("p = 1", store_history=True)
    loaded.run_cell("q = p + 1", store_history=True)
    deadline = time.monotonic() + WAIT_S
    while True:
        closes = [e for e in journal_events(store_dir) if e["event"] == "close"]
        if len(closes) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(closes) == 2, "the writer settled and wrote them by itself"
    assert closes[1]["run"]["informed_by"] == [[closes[0]["run"]["run_id"], ["p"]]]


def test_lineage_and_runs_see_every_cell_that_ended(loaded: Any, store_dir: Path) -> None:
    """A lineage read and a cell that records a run both come after the batch: the stale
    view knows the last binder, and the run's record is informed by the plain cell."""
    recorder = extension_of(loaded).recorder
    loaded.run_cell("w = 3", store_history=True, cell_id="c1")
    assert recorder.unsettled == 1
    assert "w" in recorder.lineage.last_binder
    assert recorder.unsettled == 0
    loaded.run_cell(
        "from jupyter_prov4ml import log_metric\nlog_metric('w', w)", store_history=True
    )
    assert extension_of(loaded).writer.flush(timeout_s=WAIT_S)
    plain, metric = closed_runs(store_dir)[-2:]
    assert metric["informed_by"] == [[plain["run_id"], ["w"]]]
    assert [run["run_id"] for run in closed_runs(store_dir)][-2:] == [
        plain["run_id"],
        metric["run_id"],
    ]
