"""A run's raw cluster figures (worker samples, final pulls, task rows, span metrics) turned
into records: one WorkerRecord per worker incarnation, one TaskGroupRecord per task prefix,
energy counted once per device.

Energy on a cluster: each GPU is counted once per (host, device UUID), on the first worker
incarnation that sees it; RAPL is host-wide, so a host's package energy is split between its
workers by their CPU seconds; otherwise CPU energy is estimated from CPU time. A lost worker's
readings are `partial`. The raw figures came over the network: every value is checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_prov4ml.hardware.energy import estimate_cpu_energy_j
from jupyter_prov4ml.records import (
    DaskClusterRecord,
    EnergyLedger,
    EnergyMethod,
    EnergyReading,
    TaskGroupRecord,
    WorkerRecord,
)
from jupyter_prov4ml.settings import EnergyConfig

# The columns of the per-task side file, in order (see `task_columns`).
TASK_COLUMNS = ("key", "group", "worker", "start_unix_s", "stop_unix_s", "nbytes", "status")
_LOST_DETAIL = "worker lost mid-run: figures up to its last sample"


@dataclass
class RawClusterFigures:
    """What one run gathered from one cluster, as it arrived."""

    scheduler_id: str
    scheduler_address: str
    span_id: str | None
    started_unix_s: float
    # (name, pid) → the last sample streamed by that incarnation
    samples: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # the final pull: worker address → snapshot (live workers only)
    finals: list[dict[str, Any]] = field(default_factory=list)
    # workers known at attach: address → the scheduler's info about it
    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[Sequence[Any]] = field(default_factory=list)
    metrics: list[Sequence[Any]] = field(default_factory=list)
    tasks_dropped: int = 0
    ended_unix_s: float = 0.0


@dataclass(frozen=True)
class ClusterResult:
    """The record fields of a run's cluster, and its per-task columns for the side file."""

    cluster: DaskClusterRecord | None = None
    workers: tuple[WorkerRecord, ...] = ()
    task_groups: tuple[TaskGroupRecord, ...] = ()
    task_columns: dict[str, list[Any]] = field(default_factory=dict)

    def record_fields(self) -> dict[str, Any]:
        if self.cluster is None:
            return {}
        return {"cluster": self.cluster, "workers": self.workers, "task_groups": self.task_groups}


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value) if math.isfinite(value) else default


def _text(value: Any, limit: int = 200) -> str:
    return str(value)[:limit]


def _incarnation(sample: Mapping[str, Any]) -> tuple[str, int]:
    return _text(sample.get("name")), int(_number(sample.get("pid")))


def cluster_result(raw: RawClusterFigures, energy: EnergyConfig) -> ClusterResult:
    """The records of one cluster's part in a run."""
    finals = {_incarnation(s): s for s in raw.finals if isinstance(s, Mapping) and "name" in s}
    latest: dict[tuple[str, int], Mapping[str, Any]] = {
        key: sample for key, sample in raw.samples.items() if isinstance(sample, Mapping)
    }
    latest.update(finals)
    for address, info in raw.known.items():
        # A worker known at the start that never reported (its plugin failed, or it died
        # before its first sample): recorded with what the scheduler said of it.
        key = (_text(info.get("name")), int(_number(info.get("pid"))))
        if key not in latest and not any(s.get("address") == address for s in latest.values()):
            latest[key] = {**info, "address": address, "samples": 0}
    rows = [row for row in raw.rows if isinstance(row, Sequence) and len(row) == 7]
    by_address: dict[str, tuple[str, int]] = {
        _text(sample.get("address")): key for key, sample in latest.items()
    }
    tasks_per_worker: dict[tuple[str, int], int] = {}
    for row in rows:
        ran_on = by_address.get(_text(row[2]))
        if ran_on is not None:
            tasks_per_worker[ran_on] = tasks_per_worker.get(ran_on, 0) + 1
    workers = _workers(raw, latest, finals, tasks_per_worker, energy)
    names = {address: key[0] for address, key in by_address.items()}
    return ClusterResult(
        DaskClusterRecord(
            _text(raw.scheduler_id), _text(raw.scheduler_address), raw.span_id, raw.tasks_dropped
        ),
        workers,
        _task_groups(rows, raw.metrics, names),
        _task_columns(rows, names),
    )


def _workers(
    raw: RawClusterFigures,
    latest: Mapping[tuple[str, int], Mapping[str, Any]],
    finals: Mapping[tuple[str, int], Mapping[str, Any]],
    tasks: Mapping[tuple[str, int], int],
    energy: EnergyConfig,
) -> tuple[WorkerRecord, ...]:
    keys = sorted(latest, key=lambda key: (key[0], key[1]))
    cpu = {key: _cpu_s(latest[key], raw.started_unix_s) for key in keys}
    host_cpu: dict[str, float] = {}
    host_rapl_uj: dict[str, float] = {}
    for key in keys:
        host = _text(latest[key].get("host"))
        host_cpu[host] = host_cpu.get(host, 0.0) + cpu[key]
        rapl = latest[key].get("rapl_uj")
        if rapl is not None:
            host_rapl_uj[host] = max(host_rapl_uj.get(host, 0.0), _number(rapl))
    counted_gpus: set[tuple[str, str]] = set()
    records = []
    for key in keys:
        sample = latest[key]
        status = "ok" if key in finals or sample.get("final") is True else "lost"
        host = _text(sample.get("host"))
        started = _number(sample.get("started_unix_s"), raw.started_unix_s)
        ended = _number(sample.get("at_unix_s"), raw.ended_unix_s)
        duration_s = max(0.0, ended - started)
        readings: list[EnergyReading] = []
        share = cpu[key] / host_cpu[host] if host_cpu.get(host) else 0.0
        if host in host_rapl_uj:
            readings.append(
                _reading(
                    "cpu",
                    "cpu",
                    host_rapl_uj[host] / 1e6 * share,
                    "rapl",
                    duration_s,
                    f"host {host}'s package energy, this worker's share of its CPU seconds",
                    status,
                )
            )
        else:
            readings.append(
                _reading(
                    "cpu",
                    "cpu",
                    estimate_cpu_energy_j(cpu[key], energy.watts_per_core),
                    "estimated",
                    duration_s,
                    "",
                    status,
                )
            )
        uuids, memory_peak, utilization = [], None, []
        for gpu in sample.get("gpus") or ():
            if not isinstance(gpu, Mapping):
                continue
            uuid = _text(gpu.get("uuid"), 80)
            uuids.append(uuid)
            if gpu.get("memory_peak_bytes") is not None:
                memory_peak = max(memory_peak or 0, int(_number(gpu["memory_peak_bytes"])))
            if gpu.get("utilization_mean_percent") is not None:
                utilization.append(_number(gpu["utilization_mean_percent"]))
            if gpu.get("energy_mj") is not None and (host, uuid) not in counted_gpus:
                counted_gpus.add((host, uuid))
                readings.append(
                    _reading(
                        "gpu",
                        uuid,
                        _number(gpu["energy_mj"]) / 1e3,
                        "measured-counter",
                        duration_s,
                        "counted once per host and device",
                        status,
                    )
                )
        records.append(
            WorkerRecord(
                name=key[0],
                address=_text(sample.get("address")),
                host=host,
                pid=key[1],
                nthreads=int(_number(sample.get("nthreads"))),
                status=status,
                cpu_time_s=cpu[key],
                rss_peak_bytes=int(_number(sample.get("rss_peak_bytes"))),
                task_count=tasks.get(key, 0),
                sample_count=int(_number(sample.get("samples"))),
                started_at_unix_s=started,
                ended_at_unix_s=max(started, ended),
                energy=EnergyLedger(tuple(readings), energy.carbon_intensity_g_per_kwh),
                gpu_uuids=tuple(uuids),
                gpu_memory_peak_bytes=memory_peak,
                gpu_utilization_mean_percent=(
                    sum(utilization) / len(utilization) if utilization else None
                ),
            )
        )
    return tuple(records)


def _cpu_s(sample: Mapping[str, Any], run_started_unix_s: float) -> float:
    """The incarnation's CPU seconds in the run: since its sampler started, or all of its
    process's when the process itself started during the run (a cluster the cell created,
    whose first tasks may have run before the plugin was set up)."""
    process_started = sample.get("process_started_unix_s")
    if process_started is not None and _number(process_started) >= run_started_unix_s:
        return max(0.0, _number(sample.get("cpu_total_s")))
    return max(0.0, _number(sample.get("cpu_s")))


def _reading(
    component: str,
    device: str,
    energy_j: float,
    method: EnergyMethod,
    duration_s: float,
    detail: str,
    status: str,
) -> EnergyReading:
    if status == "lost":
        detail = f"{_LOST_DETAIL} ({method})"
        method = "partial"
    return EnergyReading(component, device, max(0.0, energy_j), method, duration_s, detail)


def _task_groups(
    rows: Sequence[Sequence[Any]], metrics: Sequence[Sequence[Any]], names: Mapping[str, str]
) -> tuple[TaskGroupRecord, ...]:
    count: dict[str, int] = {}
    erred: dict[str, int] = {}
    compute: dict[str, float] = {}
    where: dict[str, set[str]] = {}
    for row in rows:
        group = _text(row[1])
        count[group] = count.get(group, 0) + 1
        erred[group] = erred.get(group, 0) + (row[6] == "erred")
        compute[group] = compute.get(group, 0.0) + max(0.0, _number(row[4]) - _number(row[3]))
        where.setdefault(group, set()).add(names.get(_text(row[2]), _text(row[2])))
    cpu: dict[str, float] = {}
    for metric in metrics:  # [prefix, activity, unit, value] of the span's `execute` metrics
        if len(metric) == 4 and metric[1] == "thread-cpu" and metric[2] == "seconds":
            cpu[_text(metric[0])] = cpu.get(_text(metric[0]), 0.0) + _number(metric[3])
    return tuple(
        TaskGroupRecord(
            name=group,
            task_count=count[group],
            compute_time_s=compute[group],
            cpu_time_s=cpu.get(group),
            erred_count=erred[group],
            workers=tuple(sorted(where[group])),
        )
        for group in sorted(count)
    )


def _task_columns(rows: Sequence[Sequence[Any]], names: Mapping[str, str]) -> dict[str, list[Any]]:
    if not rows:
        return {}
    columns: dict[str, list[Any]] = {name: [] for name in TASK_COLUMNS}
    for row in rows:
        columns["key"].append(_text(row[0]))
        columns["group"].append(_text(row[1]))
        columns["worker"].append(names.get(_text(row[2]), _text(row[2])))
        columns["start_unix_s"].append(_number(row[3]))
        columns["stop_unix_s"].append(_number(row[4]))
        columns["nbytes"].append(int(_number(row[5])))
        columns["status"].append(_text(row[6], 20))
    return columns
