"""Several kernels on one store: 4 real kernels each run 50 `%%provrun` cells at once.

Every run must be listed exactly once, every journal line must parse, every PROV document
must read back, every data file must match the sha256 its run recorded, and the index must
agree with a rebuild from the journals.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, deserialize_strict
from jupyter_prov4ml.store.index import RunIndex, index_path
from jupyter_prov4ml.store.journal import read_journal

pytestmark = pytest.mark.kernel

KERNELS = 4
RUNS_PER_KERNEL = 50
CELL = """%%provrun --no-live --no-graph --interval 0.02 --name k{kernel}-r{run}
from jupyter_prov4ml import log_metric
for step in range(20):
    log_metric("loss", 1 / (step + 1), step=step)
"""


def test_four_kernels_fifty_runs_each_into_one_store(tmp_path: Path, kernels: Any) -> None:
    store = tmp_path / "store"
    started = [kernels(store) for _ in range(KERNELS)]
    for kernel in started:
        kernel.execute("%load_ext jupyter_prov4ml")
    # Queue every cell on every kernel, then wait: the kernels run them side by side.
    pending = {
        kernel.client.execute(CELL.format(kernel=k, run=r)): kernel
        for r in range(RUNS_PER_KERNEL)
        for k, kernel in enumerate(started)
    }
    deadline = time.monotonic() + 540
    for msg_id, kernel in pending.items():
        while True:
            reply = kernel.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                assert reply["content"]["status"] == "ok", reply["content"]
                break
    for kernel in started:  # a clean shutdown: each kernel's writer finishes at exit
        kernel.manager.shutdown_kernel()
    assert not list(store.glob("sessions/*/writer.lock")), "every session closed cleanly"

    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    runs = json.loads(listing.stdout)
    names = sorted(run["name"] for run in runs)
    expected = sorted(f"k{k}-r{r}" for k in range(KERNELS) for r in range(RUNS_PER_KERNEL))
    assert names == expected, "every run listed exactly once"
    assert len({run["run_id"] for run in runs}) == KERNELS * RUNS_PER_KERNEL
    assert {run["status"] for run in runs} == {"ok"}

    journals = sorted(store.glob("sessions/*/journal.jsonl"))
    assert len(journals) == KERNELS
    for journal in journals:
        state = read_journal(journal)
        assert state.bad_lines == 0 and not state.open
        for run, _ in state.closed.values():
            for data in run.data_files:
                content = (store / data.relpath).read_bytes()
                assert hashlib.sha256(content).hexdigest() == data.sha256
    for run in runs:
        deserialize_strict(Path(run["prov_path"]))

    connection = sqlite3.connect(index_path(store))
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    # The shared index holds exactly what a rebuild from the journals holds.
    rebuilt = RunIndex.in_memory_index(store)
    rebuilt.refresh()
    with RunIndex.open(store) as shared:
        assert shared.count() == rebuilt.count() == KERNELS * RUNS_PER_KERNEL
        assert [r.run_id for r in shared.query()] == [r.run_id for r in rebuilt.query()]
