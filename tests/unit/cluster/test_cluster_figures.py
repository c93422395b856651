"""A cluster's raw figures become records as DESIGN.md says: energy once per GPU per host and
once per host for RAPL (split by CPU seconds), a lost worker `partial`, a restarted worker a new
incarnation; the records survive the journal codec and make schema-valid PROV."""

from __future__ import annotations

import json
import sys
from typing import Any

from conftest import read_prov_json_strict
from jupyter_prov4ml import provmodel
from jupyter_prov4ml.cluster.cluster_figures import RawClusterFigures, cluster_result
from jupyter_prov4ml.records import CellRef, CellRun
from jupyter_prov4ml.settings import EnergyConfig
from jupyter_prov4ml.store.codec import run_from_dict, run_to_dict
from jupyter_prov4ml.views.run_summary import RunSummary

T0 = 1_800_000_000.0


def _sample(name: str, pid: int, host: str, cpu_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": "r",
        "name": name,
        "address": f"tcp://{host}:{pid}",
        "host": host,
        "pid": pid,
        "nthreads": 2,
        "at_unix_s": T0 + 5,
        "started_unix_s": T0 + 0.1,
        "process_started_unix_s": T0 - 100,
        "cpu_s": cpu_s,
        "cpu_total_s": cpu_s + 50,
        "rss_peak_bytes": 100 * 2**20,
        "rapl_uj": None,
        "gpus": [],
        "samples": 5,
        "final": False,
        **extra,
    }


def _raw(**fields: Any) -> RawClusterFigures:
    return RawClusterFigures("Scheduler-abc", "tcp://10.0.0.1:8786", "span-1", T0, **fields)


def _run(**fields: Any) -> CellRun:
    return CellRun(
        "s-00001",
        "s",
        "provrun",
        CellRef("ab" * 32, "x = 1"),
        T0,
        T0 + 6,
        6.0,
        0.1,
        "ok",
        **fields,
    )


def test_gpu_energy_is_counted_once_per_host_and_device() -> None:
    """Two workers of one host that both see GPU `GPU-a` count its energy once; a worker on
    another host with a GPU of the same UUID counts its own."""
    gpu = {"uuid": "GPU-a", "energy_mj": 50_000, "memory_peak_bytes": 2**30}
    finals = [
        _sample("w0", 1, "h1", 1.0, gpus=[gpu]),
        _sample("w1", 2, "h1", 1.0, gpus=[gpu]),
        _sample("w2", 3, "h2", 1.0, gpus=[gpu]),
    ]
    result = cluster_result(_raw(finals=finals), EnergyConfig())
    gpu_joules = {
        worker.name: sum(r.energy_j for r in worker.energy.readings if r.component == "gpu")
        for worker in result.workers
        if worker.energy is not None
    }
    assert gpu_joules == {"w0": 50.0, "w1": 0.0, "w2": 50.0}
    assert all(worker.gpu_uuids == ("GPU-a",) for worker in result.workers)


def test_rapl_is_read_once_per_host_and_split_by_cpu_seconds() -> None:
    """A host's package energy goes to its workers in proportion to their CPU seconds (not
    N times, codecarbon#544); without RAPL, CPU energy is estimated from CPU time."""
    finals = [
        _sample("w0", 1, "h1", 3.0, rapl_uj=100_000_000),
        _sample("w1", 2, "h1", 1.0, rapl_uj=99_000_000),
        _sample("w2", 3, "h2", 2.0),
    ]
    config = EnergyConfig()
    result = cluster_result(_raw(finals=finals), config)
    cpu = {
        w.name: next(r for r in w.energy.readings if r.component == "cpu") for w in result.workers
    }
    assert cpu["w0"].method == cpu["w1"].method == "rapl"
    assert abs(cpu["w0"].energy_j - 75.0) < 1e-9 and abs(cpu["w1"].energy_j - 25.0) < 1e-9
    assert cpu["w2"].method == "estimated"
    assert abs(cpu["w2"].energy_j - 2.0 * config.watts_per_core) < 1e-9


def test_lost_worker_keeps_its_last_sample_as_partial_and_its_restart_is_new() -> None:
    """An incarnation that streamed samples but did not answer the final pull is `lost`,
    with the figures of its last sample and `partial` energy; the nanny's restart (same name,
    new pid) is another incarnation; tasks are counted on the incarnation that ran them."""
    samples = {("w0", 1): _sample("w0", 1, "h1", 0.7)}
    finals = [_sample("w0", 9, "h1", 0.2, address="tcp://h1:99", final=True)]
    rows = [
        ("burn-1", "burn", "tcp://h1:1", T0 + 1, T0 + 1.5, 8, "memory"),
        ("burn-2", "burn", "tcp://h1:99", T0 + 2, T0 + 2.25, 8, "memory"),
        ("sum-1", "sum", "tcp://h1:99", T0 + 3, T0 + 3.5, 8, "erred"),
    ]
    metrics = [["burn", "thread-cpu", "seconds", 0.6], ["burn", "thread-noncpu", "seconds", 1]]
    raw = _raw(samples=samples, finals=finals, rows=rows, metrics=metrics)
    result = cluster_result(raw, EnergyConfig())
    by_pid = {worker.pid: worker for worker in result.workers}
    assert by_pid[1].status == "lost" and by_pid[9].status == "ok"
    assert by_pid[1].cpu_time_s == 0.7 and by_pid[1].task_count == 1
    assert by_pid[1].energy is not None and by_pid[1].energy.methods() == "partial"
    assert by_pid[9].task_count == 2
    groups = {group.name: group for group in result.task_groups}
    assert groups["burn"].task_count == 2 and groups["burn"].cpu_time_s == 0.6
    assert abs(groups["burn"].compute_time_s - 0.75) < 1e-9
    assert groups["sum"].erred_count == 1 and groups["sum"].workers == ("w0",)
    assert result.task_columns["worker"] == ["w0", "w0", "w0"]


def test_hostile_figures_do_not_break_the_records() -> None:
    """Figures arrive over the network: wrong types, NaN and missing keys give zeros, not an
    exception (the run is saved whatever a worker sent)."""
    bad = {"name": "w", "pid": "x", "cpu_s": float("nan"), "gpus": ["no"], "rapl_uj": "a"}
    result = cluster_result(_raw(finals=[bad], rows=[("k",), None]), EnergyConfig())
    assert result.workers[0].cpu_time_s == 0.0


def test_cluster_fields_round_trip_through_the_codec_and_make_valid_prov() -> None:
    """A run with a cluster reads back equal from its journal form; an old journal line
    without the new keys reads as a run without a cluster; its PROV document passes the
    W3C schema with the cluster agent, one agent and one activity per worker incarnation
    and one activity per task group."""
    finals = [_sample("w0", 1, "h1", 1.0), _sample("w1", 2, "h2", 2.0)]
    rows = [("burn-1", "burn", "tcp://h1:1", T0 + 1, T0 + 2, 8, "memory")]
    result = cluster_result(_raw(finals=finals, rows=rows), EnergyConfig())
    run = _run(**result.record_fields())
    encoded = json.loads(json.dumps(run_to_dict(run)))
    assert run_from_dict(encoded) == run
    old = {k: v for k, v in encoded.items() if k not in ("cluster", "workers", "task_groups")}
    assert run_from_dict(old).cluster is None
    document = read_prov_json_strict(provmodel.serialize(provmodel.run_document(run, None)))
    kinds = [str(t) for record in document.get_records() for t in record.get_asserted_types()]
    assert kinds.count("p4m:DaskCluster") == 1
    assert kinds.count("p4m:DaskWorker") == 2
    assert kinds.count("p4m:DaskWorkerRun") == 2
    assert kinds.count("p4m:DaskTaskGroup") == 1
    text = provmodel.serialize(provmodel.run_document(run, None))
    assert "actedOnBehalfOf" in text and '"prov:location": "h1"' in text


def test_summary_shows_one_row_per_worker() -> None:
    """The summary gives the cluster one line, each worker incarnation one row (a lost one
    marked), and the task groups."""
    samples = {("w0", 1): _sample("w0", 1, "h1", 0.5)}
    finals = [_sample("w1", 2, "h1", 1.0)]
    rows = [("burn-1", "burn", "tcp://h1:2", T0 + 1, T0 + 2, 8, "memory")]
    result = cluster_result(_raw(samples=samples, finals=finals, rows=rows), EnergyConfig())
    text = repr(RunSummary(_run(**result.record_fields())))
    assert "2 worker incarnation(s), 1 lost" in text
    assert "worker w0: LOST mid-run" in text and "worker w1: h1 pid 2" in text
    assert "burn ×1" in text


def test_the_plugins_load_where_this_package_is_not_installed(tmp_path: Any) -> None:
    """The plugins and end-of-run functions, pickled the way `register_plugin` and
    `Client.run` pickle them, load and run in a Python where importing `jupyter_prov4ml`
    fails (a cluster without our package)."""
    import subprocess

    from distributed.protocol.pickle import dumps

    from jupyter_prov4ml.cluster import dask_client, worker_probe

    shipped = (
        dask_client._RunWorkerSampler("r", "t", 1.0),
        dask_client._RunTaskLog("span"),
        worker_probe.final_snapshot,
        worker_probe.scheduler_figures,
    )
    path = tmp_path / "shipped.pickle"
    path.write_bytes(dumps(shipped))
    script = (
        "import sys, pickle; sys.modules['jupyter_prov4ml'] = None\n"
        f"sampler, log, final, figures = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "assert sampler.run_id == 'r' and log.span_id == 'span'\n"
        "print(final.__globals__['process_cpu_s']() >= 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
