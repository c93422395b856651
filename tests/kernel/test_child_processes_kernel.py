"""A `%%provrun` in a real ipykernel whose work runs in forked `multiprocessing` workers: the
run's CPU time covers them, and what they log reaches the run (ipykernel's shell is copied
into a forked child; the child must not log into that copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs

pytestmark = pytest.mark.kernel

CELL = """%%provrun --no-graph
import multiprocessing, os, time
from jupyter_prov4ml import log_metric

def work(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    log_metric("worker_cpu_s", time.process_time(), step=os.getpid())
    return os.getpid()

before = os.times()
with multiprocessing.get_context("fork").Pool(2) as pool:
    worker_pids = pool.map(work, [0.5, 0.5])
    pool.close()
    pool.join()
after = os.times()
reaped_s = (after.children_user + after.children_system) - (
    before.children_user + before.children_system
)
print(json.dumps({"reaped_s": reaped_s, "pids": sorted(set(worker_pids))}))
"""


def test_provrun_in_a_kernel_counts_and_hears_forked_workers(tmp_path: Path, kernels: Any) -> None:
    """>= 90 % of the children's CPU time (os.times) is in the run's `cpu_time_s` beyond the
    kernel's share, and each worker's metric point is stored with its pid."""
    store = tmp_path / "store"
    kernel = kernels(store)
    messages = kernel.execute("import json\n%load_ext jupyter_prov4ml")
    assert not [m for m in messages if m["msg_type"] == "error"]
    messages = kernel.execute(CELL)
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    printed = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    facts = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    kernel.execute("get_ipython()._jupyter_prov4ml.writer.flush(timeout_s=60)")
    record = next(r for r in reversed(closed_runs(store)) if r["kind"] == "provrun")
    children_s = record["cpu_time_s"] - record["kernel_cpu_time_s"]
    assert facts["reaped_s"] >= 0.9
    assert children_s >= 0.9 * facts["reaped_s"], (children_s, facts)
    (metrics,) = [f for f in record["data_files"] if f["role"] == "metrics"]
    from jupyter_prov4ml.store.series_files import read_metrics_file

    columns = read_metrics_file(store / metrics["relpath"])
    assert sorted(columns["pid"]) == facts["pids"]
    assert columns["step"] == columns["pid"]
