"""The Dask lines of a run's summary: the cluster, one compact row per worker incarnation,
and the task groups (plain text; the summary escapes it once, through views/escape.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jupyter_prov4ml.records import CellRun, WorkerRecord
from jupyter_prov4ml.views.escape import html_text

# Beyond these, the summary says how many more there are (the record has them all).
MAX_WORKER_ROWS = 16
MAX_GROUPS_SHOWN = 8


def cluster_facts(run: CellRun) -> list[tuple[str, str]]:
    """(label, text) rows for a run that used a Dask cluster; none otherwise."""
    if run.cluster is None:
        return []
    workers = run.workers
    lost = sum(worker.status == "lost" for worker in workers)
    cpu = sum(worker.cpu_time_s for worker in workers)
    energy = sum(worker.energy.total_j for worker in workers if worker.energy is not None)
    tasks = sum(group.task_count for group in run.task_groups)
    head = f"{len(workers)} worker incarnation(s)" + (f", {lost} lost" if lost else "")
    facts = [
        (
            "Dask",
            f"{head} at {run.cluster.scheduler_address}: {cpu:.2f} s CPU, {tasks:,} tasks, "
            f"{energy:.1f} J",
        )
    ]
    for worker in workers[:MAX_WORKER_ROWS]:
        facts.append((f"worker {worker.name}"[:40], worker_row(worker)))
    if len(workers) > MAX_WORKER_ROWS:
        facts.append(("workers", f"… and {len(workers) - MAX_WORKER_ROWS} more"))
    if run.task_groups:
        shown = ", ".join(
            f"{group.name} ×{group.task_count} ({group.compute_time_s:.2f} s"
            f"{' on ' + ', '.join(group.workers[:4]) if group.workers else ''}"
            f"{'…' if len(group.workers) > 4 else ''})"
            for group in run.task_groups[:MAX_GROUPS_SHOWN]
        )
        more = len(run.task_groups) - MAX_GROUPS_SHOWN
        facts.append(("task groups", shown + (f", … and {more} more" if more > 0 else "")))
    if run.cluster.tasks_dropped:
        facts.append(("tasks", f"{run.cluster.tasks_dropped:,} beyond the per-run bound not kept"))
    return facts


def worker_row(worker: WorkerRecord) -> str:
    """One worker incarnation in one line."""
    parts = [
        f"{worker.host} pid {worker.pid}",
        f"{worker.nthreads} thread{'s' if worker.nthreads != 1 else ''}",
        f"CPU {worker.cpu_time_s:.2f} s",
        f"peak RSS {worker.rss_peak_bytes / 2**20:.0f} MiB",
        f"{worker.task_count} tasks",
    ]
    if worker.gpu_uuids:
        gpu = f"{len(worker.gpu_uuids)} GPU"
        if worker.gpu_utilization_mean_percent is not None:
            gpu += f" {worker.gpu_utilization_mean_percent:.0f} %"
        if worker.gpu_memory_peak_bytes is not None:
            gpu += f", {worker.gpu_memory_peak_bytes / 2**20:.0f} MiB"
        parts.append(gpu)
    if worker.energy is not None:
        parts.append(f"{worker.energy.total_j:.1f} J ({worker.energy.methods()})")
    row = " · ".join(parts)
    return f"LOST mid-run (partial) · {row}" if worker.status == "lost" else row


def live_worker_rows(
    latest: Callable[[], Sequence[tuple[dict[str, Any], str]]], watts_per_core: float
) -> list[tuple[str, str]]:
    """The live dashboard's rows, one per Dask worker incarnation: (label, HTML), every
    value escaped (worker names come from the cluster). CPU energy here is the CPU-time
    estimate; the record counts each device once when the run ends."""
    rows = []
    samples = latest()
    for sample, state in samples[:MAX_WORKER_ROWS]:
        cpu_s = _float(sample.get("cpu_s"))
        energy_j = cpu_s * watts_per_core
        parts = [
            f"{sample.get('host')}",
            f"CPU {cpu_s:.2f} s",
            f"RSS {_float(sample.get('rss_bytes')) / 2**20:.0f} MiB",
        ]
        for gpu in sample.get("gpus") or ():
            if isinstance(gpu, dict):
                energy_j += _float(gpu.get("energy_mj")) / 1e3
                util = gpu.get("utilization_mean_percent")
                memory = gpu.get("memory_peak_bytes")
                parts.append(
                    f"GPU {'n/a' if util is None else f'{_float(util):.0f} %'}"
                    f"{'' if memory is None else f', {_float(memory) / 2**20:.0f} MiB'}"
                )
        parts.append(f"≈ {energy_j:.1f} J")
        if state != "running":
            parts.append(state.upper() if state == "lost" else state)
        label = f"Dask {sample.get('name')}"[:40]
        rows.append((html_text(label), html_text(" · ".join(parts))))
    if len(samples) > MAX_WORKER_ROWS:
        rows.append(("Dask", html_text(f"… and {len(samples) - MAX_WORKER_ROWS} more workers")))
    return rows


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0.0
    return float(value)
