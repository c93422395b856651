"""A `%%provrun` whose work runs in child processes, through a real IPython shell and real
processes (fork, spawn, a Python subprocess): the run's CPU time covers them, and what they log
with `log_metric`/`log_param` is kept, each point with the process that logged it."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jupyter_prov4ml
from conftest import closed_runs, deserialize_strict
from jupyter_prov4ml.hardware.process_tree import is_process_column

WORKERS = '''
import os
import time


def burn(seconds):
    """Spend `seconds` of this process's CPU time (not of the wall clock)."""
    end = time.process_time() + seconds
    total = 0
    while time.process_time() < end:
        total += sum(range(1000))
    return time.process_time()


def wait_then_burn(go, burned, seconds):
    """A worker started before the run: it burns CPU only once the run tells it to, and says
    how much it burned; it stays alive until told to stop."""
    go.wait()
    start = time.process_time()
    burn(seconds)
    burned.value = time.process_time() - start


def log_from_spawned(rank):
    os.environ["RANK"] = str(rank)
    os.environ["LOCAL_RANK"] = "0"
    from jupyter_prov4ml import log_metric, log_param

    for step in range(3):
        log_metric("child_loss", 1.0 / (step + 1), step=step)
    log_param("spawned_param", "yes")


def log_from_forked():
    from jupyter_prov4ml import log_metric, log_param

    log_metric("child_loss", 0.5, step=10)
    log_metric("child_acc", float("nan"))
    log_param("forked_param", 3)
'''


@pytest.fixture
def workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module of worker functions importable by spawned children (spawn sends sys.path)."""
    folder = tmp_path / "workers"
    folder.mkdir()
    (folder / "p4m_workers.py").write_text(WORKERS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield folder
    sys.modules.pop("p4m_workers", None)


def run(shell: Any, source: str) -> Any:
    result = shell.run_cell(textwrap.dedent(source), store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=60)
    return result


def test_run_cpu_covers_children_reaped_and_started_before(
    loaded: Any, store_dir: Path, workers: Path
) -> None:
    """A run whose work runs in a multiprocessing pool (reaped during the run) and in a worker
    started before the run (still alive after it) records >= 90 % of the children's CPU time
    that os.times() and the worker report; `cpu_time_s` is the tree's, the kernel's share is
    beside it, in the journal and in the PROV document."""
    run(
        loaded,
        """
        import multiprocessing, os, time
        import p4m_workers
        ctx = multiprocessing.get_context("fork")
        go, burned = ctx.Event(), ctx.Value("d", 0.0)
        early = ctx.Process(target=p4m_workers.wait_then_burn, args=(go, burned, 0.6))
        early.start()
        """,
    )
    run(
        loaded,
        """
        %%provrun --no-graph
        before = os.times()
        go.set()
        with ctx.Pool(2) as pool:
            pool.map(p4m_workers.burn, [0.5, 0.5])
            pool.close()
            pool.join()
        while burned.value == 0.0:
            time.sleep(0.01)
        after = os.times()
        reaped_s = (after.children_user + after.children_system) - (
            before.children_user + before.children_system
        )
        """,
    )
    expected_s = loaded.user_ns["reaped_s"] + loaded.user_ns["burned"].value
    loaded.run_cell("early.join()")
    record = closed_runs(store_dir)[-1]
    children_s = record["cpu_time_s"] - record["kernel_cpu_time_s"]
    assert loaded.user_ns["reaped_s"] >= 0.9, "the pool's workers were reaped in the run"
    assert children_s >= 0.9 * expected_s, (children_s, expected_s)
    # Nothing counted twice: at most what they burned plus their start-up and exit.
    assert children_s <= 1.5 * expected_s + 0.3, (children_s, expected_s)
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    document = json.loads(path.read_text())
    (activity,) = [a for k, a in document["activity"].items() if k.startswith("p4m:run_")]
    assert _number(activity["p4m:cpu_time_s"]) == pytest.approx(record["cpu_time_s"])
    assert _number(activity["p4m:kernel_cpu_time_s"]) == pytest.approx(record["kernel_cpu_time_s"])


def _number(value: Any) -> float:
    """A PROV-JSON number: plain, or typed as {"$": text, "type": "xsd:double"}."""
    return float(value["$"]) if isinstance(value, dict) else float(value)


def test_tree_series_go_to_the_samples_file_not_the_record(
    loaded: Any, store_dir: Path, workers: Path
) -> None:
    """The sampler reads the tree: totals (CPU %, RSS, process count) are summarised in the
    record, each process's series is in the samples file only."""
    run(
        loaded,
        """
        %%provrun --no-graph --interval 0.05
        import multiprocessing, p4m_workers
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            pool.map(p4m_workers.burn, [0.4, 0.4])
        """,
    )
    record = closed_runs(store_dir)[-1]
    summarised = [name for name, _ in record["hardware"]["series"]]
    assert {"tree_cpu_percent", "tree_rss_bytes", "tree_process_count"} <= set(summarised)
    assert not [name for name in summarised if is_process_column(name)]
    assert "process_rss_bytes" in summarised  # the kernel's own series are not per-process
    assert dict(record["hardware"]["series"])["tree_process_count"]["max"] >= 3
    from jupyter_prov4ml.store.series_files import read_parquet

    (samples,) = [f for f in record["data_files"] if f["role"] == "hardware_samples"]
    columns = read_parquet(store_dir / samples["relpath"])
    own = f"proc{os.getpid()}_cpu_percent"
    assert own in columns
    children = [c for c in columns if is_process_column(c) and c.endswith("_cpu_percent")]
    assert len(children) >= 3, children  # the kernel and its two pool workers


def test_metrics_and_params_from_forked_spawned_and_subprocess_children(
    loaded: Any, store_dir: Path, workers: Path
) -> None:
    """log_metric/log_param in a forked child, a spawned child (with RANK/LOCAL_RANK set) and
    a Python subprocess of a %%provrun are kept, merged with the kernel's points in time
    order, each point with its pid (and ranks where set); the spool is gone afterwards."""
    run(
        loaded,
        """
        %%provrun --no-graph
        import multiprocessing, os, subprocess, sys
        import p4m_workers
        from jupyter_prov4ml import log_metric
        log_metric("child_loss", 2.0, step=-1)
        forked = multiprocessing.get_context("fork").Process(target=p4m_workers.log_from_forked)
        forked.start(); forked.join()
        spawned = multiprocessing.get_context("spawn").Process(
            target=p4m_workers.log_from_spawned, args=(1,)
        )
        spawned.start(); spawned.join()
        sub = subprocess.run(
            [sys.executable, "-c",
             "import os; from jupyter_prov4ml import log_metric; "
             "log_metric('sub_metric', 7, context='testing'); print(os.getpid())"],
            capture_output=True, text=True, check=True,
        )
        pids = {"forked": forked.pid, "spawned": spawned.pid, "sub": int(sub.stdout)}
        """,
    )
    pids = loaded.user_ns["pids"]
    record = closed_runs(store_dir)[-1]
    metrics = jupyter_prov4ml.read_metrics(record["run_id"], store=store_dir)
    rows = list(
        zip(
            *(list(metrics[c]) for c in ("name", "step", "value", "pid", "rank", "local_rank")),
            strict=True,
        )
    )
    loss = [row for row in rows if row[0] == "child_loss"]
    assert [(step, pid) for _, step, _, pid, _, _ in loss] == [
        (-1, os.getpid()),
        (10, pids["forked"]),
        (0, pids["spawned"]),
        (1, pids["spawned"]),
        (2, pids["spawned"]),
    ]
    spawned_ranks = {(rank, local) for _, _, _, pid, rank, local in loss if pid == pids["spawned"]}
    assert spawned_ranks == {(1, 0)}
    assert [row[3] for row in rows if row[0] == "sub_metric"] == [pids["sub"]]
    (acc,) = [row for row in rows if row[0] == "child_acc"]
    assert acc[2] != acc[2] and acc[1] == 0  # NaN kept; steps numbered from 0
    params = {p["name"]: p["value"] for p in record["params"]}
    assert params["forked_param"] == 3 and params["spawned_param"] == "yes"
    summaries = {m["name"] for m in record["metrics"]}
    assert {"child_loss", "child_acc", "sub_metric"} <= summaries
    assert not list((store_dir / "sessions").glob("*/runs/*.spool"))
    assert "JUPYTER_PROV4ML_SPOOL" not in os.environ
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    deserialize_strict(path)


def test_a_forked_child_outside_a_run_records_nothing_and_does_not_fail(
    loaded: Any, workers: Path
) -> None:
    """Outside a %%provrun a forked child has no spool: its log_metric warns and returns
    (the kernel's extension copy is not used, so nothing is silently lost in it)."""
    run(
        loaded,
        """
        import multiprocessing, p4m_workers
        child = multiprocessing.get_context("fork").Process(target=p4m_workers.log_from_forked)
        child.start(); child.join()
        assert child.exitcode == 0
        """,
    )
