"""`%%provrun` on real Dask clusters, in a real IPython shell: one started the HPC way
(`dask scheduler` + two `dask worker` processes on loopback), a `LocalCluster` of processes,
a worker killed mid-cell, a cluster the cell creates itself, and a session that never imports
`distributed` (which must stay unimported). Workloads are tiny; every wait is bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs, deserialize_strict, displayed, extension_of

distributed = pytest.importorskip("distributed")

# Each task burns this much CPU by the process clock (not an amount of work): per-worker CPU
# is then > 0 whatever the machine's speed.
BURN_CELL = """%%provrun --name dask-run --no-graph
import time
from distributed import get_client

def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return seconds

client = get_client()
addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
futures = [
    client.submit(burn, 0.03, workers=[address], pure=False)
    for address in addresses
    for _ in range(2)
]
total = sum(client.gather(futures))
"""


def flush(shell: Any) -> None:
    """Write everything pending; fail on our own notices of unsaved data."""
    extension = extension_of(shell)
    assert extension.writer.flush(timeout_s=30)
    pending = extension.notices.drain()
    assert not [m for m in pending if "could not save" in m or "Dask" in m], pending


def provrun_record(store: Path) -> dict[str, Any]:
    runs = [run for run in closed_runs(store) if run["kind"] == "provrun"]
    assert runs, "no %%provrun record"
    return runs[-1]


def prov_document(store: Path, run_id: str) -> dict[str, Any]:
    """The run's PROV-JSON (checked against the schema on the way) as JSON."""
    (path,) = store.rglob(f"{run_id}.prov.json")
    deserialize_strict(path)
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def assert_both_workers_recorded(store: Path, shell: Any) -> dict[str, Any]:
    """The shared checks of a two-worker run: per-worker CPU > 0, tasks listed per group and
    worker, the side file, the PROV agents, one summary row per worker."""
    run = provrun_record(store)
    assert run["status"] == "ok"
    workers = run["workers"]
    assert len(workers) == 2, workers
    assert all(worker["status"] == "ok" and worker["cpu_time_s"] > 0 for worker in workers)
    assert [worker["task_count"] for worker in workers] == [2, 2]
    assert all(worker["energy"]["readings"] for worker in workers)
    (group,) = run["task_groups"]
    assert group["name"] == "burn" and group["task_count"] == 4
    assert sorted(group["workers"]) == sorted(worker["name"] for worker in workers)
    assert group["compute_time_s"] > 0
    assert "dask_tasks" in {data_file["role"] for data_file in run["data_files"]}
    document = prov_document(store, run["run_id"])
    types = [
        attributes.get("prov:type", {}).get("$")
        for kind in ("agent", "activity")
        for attributes in document.get(kind, {}).values()
    ]
    assert types.count("p4m:DaskWorker") == 2 and types.count("p4m:DaskCluster") == 1
    assert types.count("p4m:DaskWorkerRun") == 2 and types.count("p4m:DaskTaskGroup") == 1
    assert len(document["actedOnBehalfOf"]) == 2
    text = "\n".join(str(bundle.get("text/plain", "")) for bundle in displayed(shell))
    assert text.count("worker ") >= 2 and "burn ×4" in text
    return run


@pytest.fixture
def hpc_client(tmp_path: Path) -> Iterator[Any]:
    """A cluster started as on an HPC allocation: `dask scheduler` writing a scheduler file
    and two `dask worker` processes reading it, all on 127.0.0.1; always torn down."""
    dask = Path(sys.executable).with_name("dask")
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    client = None

    def start(name: str, *arguments: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            processes.append(
                subprocess.Popen([str(dask), *arguments], stdout=log, stderr=subprocess.STDOUT)
            )

    try:
        start(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
            "--no-dashboard", "--scheduler-file", str(scheduler_file),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for index in range(2):
            start(
                f"worker-{index}", "worker", "--scheduler-file", str(scheduler_file),
                "--nthreads", "1", "--name", f"hpc-{index}", "--host", "127.0.0.1",
                "--no-dashboard", "--memory-limit", "0",
            )  # fmt: skip
        client = distributed.Client(scheduler_file=str(scheduler_file), timeout=60)
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        if client is not None:
            client.close()
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


@pytest.fixture
def local_client() -> Iterator[Any]:
    """`LocalCluster(processes=True, n_workers=2)` and its client; always closed."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_hpc_style_cluster_records_each_worker(
    loaded: Any, store_dir: Path, hpc_client: Any
) -> None:
    """With a client connected before the cell (scheduler file, two `dask worker`s), the
    run records both workers by name and host, their CPU, tasks and energy, the task group
    and where it ran; the PROV document is valid; the plugins are removed after the run."""
    result = loaded.run_cell(BURN_CELL)
    assert result.success, result.error_in_exec
    flush(loaded)
    run = assert_both_workers_recorded(store_dir, loaded)
    assert sorted(worker["name"] for worker in run["workers"]) == ["hpc-0", "hpc-1"]
    assert run["cluster"]["span_id"]
    plugins = hpc_client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert not any("jupyter-prov4ml" in name for names in plugins.values() for name in names)


def test_local_cluster_records_each_worker(loaded: Any, store_dir: Path, local_client: Any) -> None:
    """The same on a `LocalCluster` of two worker processes; a run before it that ran no
    task on the (connected) cluster records no cluster."""
    idle = loaded.run_cell("%%provrun --name idle --no-graph\nx = 1\n")
    result = loaded.run_cell(BURN_CELL)
    assert idle.success and result.success, result.error_in_exec
    flush(loaded)
    assert_both_workers_recorded(store_dir, loaded)
    first = next(run for run in closed_runs(store_dir) if run.get("name") == "idle")
    assert first.get("cluster") is None and not first.get("workers")


KILL_CELL = """%%provrun --name lost-worker --no-graph
import os, signal, time
from distributed import get_client

client = get_client()
pids = client.run(os.getpid)
victim_name, victim = None, sorted(pids.values())[0]
# Bounded waits on conditions: the victim's first streamed sample has reached the run, then
# (after the kill) its nanny has started it again under the same name.
samples = get_ipython()._jupyter_prov4ml.cluster_capture.watches[0].raw.samples
deadline = time.monotonic() + 30
while victim not in [pid for _, pid in samples] and time.monotonic() < deadline:
    time.sleep(0.02)
os.kill(victim, signal.SIGKILL)
while time.monotonic() < deadline:
    now = client.run(os.getpid, on_error="ignore")
    if len(now) == 2 and victim not in now.values():
        break
    time.sleep(0.05)
answer = client.submit(sum, [1, 2], pure=False).result()
"""


def test_worker_killed_mid_cell_is_recorded_lost(
    loaded: Any, store_dir: Path, local_client: Any
) -> None:
    """A worker SIGKILLed during the cell is recorded `lost`, with its streamed figures and
    `partial` energy; its restart by the nanny is a new incarnation (same name, new pid);
    the run itself ends `ok` and is saved with a valid PROV document."""
    result = loaded.run_cell(KILL_CELL)
    assert result.success, result.error_in_exec
    flush(loaded)
    victim = loaded.user_ns["victim"]
    run = provrun_record(store_dir)
    assert run["status"] == "ok"
    by_pid = {worker["pid"]: worker for worker in run["workers"]}
    lost = by_pid[victim]
    assert lost["status"] == "lost"
    assert {reading["method"] for reading in lost["energy"]["readings"]} == {"partial"}
    reborn = [w for w in run["workers"] if w["name"] == lost["name"] and w["pid"] != victim]
    assert reborn and reborn[0]["status"] == "ok"
    document = prov_document(store_dir, run["run_id"])
    statuses = [
        attributes.get("p4m:status")
        for attributes in document["activity"].values()
        if attributes.get("prov:type", {}).get("$") == "p4m:DaskWorkerRun"
    ]
    assert "lost" in statuses


SESSION_SCRIPT = r'''
import json, os, sys
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

IN_CELL_CLUSTER = """%%provrun --name in-cell --no-graph
import time
from distributed import Client, LocalCluster

def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return seconds

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
total = sum(client.gather(client.map(burn, [0.03] * 4, pure=False)))
"""

if __name__ == "__main__":
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_cell("%load_ext jupyter_prov4ml")
    plain = shell.run_cell("%%provrun --no-graph\nx = sum(range(1000))")
    report = {
        "ok": plain.success,
        "imported": sorted(m for m in ("distributed", "dask") if m in sys.modules),
        "env_left": "DASK_DISTRIBUTED__CLIENT__PRELOAD" in os.environ,
    }
    if sys.argv[1:] == ["with-cluster"]:
        result = shell.run_cell(IN_CELL_CLUSTER)
        report["cluster_ok"] = result.success
        report["env_left_after"] = "DASK_DISTRIBUTED__CLIENT__PRELOAD" in os.environ
        import dask

        report["config_left_after"] = dask.config.get("distributed.client.preload")
        shell.run_cell("client.close(); cluster.close()")
    extension = shell._jupyter_prov4ml
    report["flushed"] = extension.writer.flush(timeout_s=30)
    report["notices"] = extension.notices.drain()
    shell.run_line_magic("unload_ext", "jupyter_prov4ml")
    print("REPORT " + json.dumps(report))
'''


def run_session(tmp_path: Path, store_dir: Path, *arguments: str) -> dict[str, Any]:
    """The session script in a fresh Python (nothing imported), its report."""
    script = tmp_path / "session.py"
    script.write_text(SESSION_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "JUPYTER_PROV4ML_STORE": str(store_dir)},
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1][len("REPORT ") :])
    return report


def test_a_session_without_distributed_never_imports_it(tmp_path: Path, store_dir: Path) -> None:
    """Loading the extension and running a `%%provrun` in a session that never imported
    Dask imports neither `distributed` nor `dask`, and leaves no preload setting behind."""
    report = run_session(tmp_path, store_dir)
    assert report["ok"] and report["flushed"]
    assert report["imported"] == []
    assert report["env_left"] is False


def test_a_cluster_created_inside_the_cell_is_captured(tmp_path: Path, store_dir: Path) -> None:
    """A `LocalCluster` and `Client` created inside the `%%provrun` body, in a session that
    had not imported Dask before, are seen through the client preload: both workers with
    their CPU, the task group; the preload is removed after the cell (from the environment
    and from the config Dask read it into)."""
    report = run_session(tmp_path, store_dir, "with-cluster")
    assert report["cluster_ok"] and report["flushed"], report
    assert report["env_left_after"] is False and report["config_left_after"] == []
    assert not [n for n in report["notices"] if "Dask" in n], report["notices"]
    run = provrun_record(store_dir)
    assert run["name"] == "in-cell"
    workers = run["workers"]
    assert len(workers) == 2 and all(w["cpu_time_s"] > 0 for w in workers), workers
    (group,) = run["task_groups"]
    assert group["name"] == "burn" and group["task_count"] == 4
