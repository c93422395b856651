"""What runs on a Dask cluster's workers and scheduler during a `%%provrun`.

This module is shipped by value (cloudpickle) to clusters that may not have this package
installed, so it uses the standard library only (psutil and pynvml where importable), imports
nothing of ours and never imports `distributed`: the plugin base classes are handed in by
`dask_client`. Everything it returns is plain dicts, lists, str, int and float.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

# Workers stream a sample this often: enough for a dead worker's figures to survive up to
# about a second before its death, without flooding the scheduler of a big cluster.
WORKER_SAMPLE_INTERVAL_S = 1.0
# The most task rows the scheduler plugin keeps for one run (the side file's rows).
MAX_TASK_ROWS = 200_000
_RAPL_ROOT = "/sys/class/powercap"


def process_cpu_s() -> float:
    """User + system CPU seconds of this whole process (all threads)."""
    times = os.times()
    return times.user + times.system


def process_rss_bytes() -> int:
    """Resident memory of this process, from /proc where there is one."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil absent or refused: no figure
        return 0


def process_started_unix_s() -> float | None:
    """When this process started (/proc/self/stat's start time), None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])
        with open("/proc/stat", "rb") as system:
            for line in system:
                if line.startswith(b"btime "):
                    return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


def rapl_counters() -> dict[str, tuple[int, int]]:
    """Each readable RAPL package counter: (energy µJ, wrap range µJ). Often root-only."""
    found: dict[str, tuple[int, int]] = {}
    try:
        names = sorted(os.listdir(_RAPL_ROOT))
    except OSError:
        return found
    for name in names:
        if not name.startswith("intel-rapl:") or name.count(":") != 1:
            continue  # sub-domains (core, dram) are inside the package's count
        try:
            with open(f"{_RAPL_ROOT}/{name}/energy_uj") as energy:
                value = int(energy.read())
            with open(f"{_RAPL_ROOT}/{name}/max_energy_range_uj") as limit:
                wrap = int(limit.read())
        except (OSError, ValueError):
            continue
        found[name] = (value, wrap)
    return found


def rapl_delta_uj(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Host package energy between two readings, across one counter wrap."""
    total = 0
    for name, (start, wrap) in before.items():
        if name in after:
            end = after[name][0]
            total += end - start if end >= start else end + wrap - start
    return total


class GpuReader:
    """The GPUs this worker sees (CUDA_VISIBLE_DEVICES), read through NVML when importable.
    Read-only: no setting is ever changed."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[tuple[str, Any]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = self._visible(pynvml)
        except Exception:  # noqa: BLE001 - no NVML, no GPU, or a driver error: no GPU figures
            self.handles = []

    @staticmethod
    def _visible(nvml: Any) -> list[tuple[str, Any]]:
        handles = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            handles.append((uuid.decode() if isinstance(uuid, bytes) else str(uuid), handle))
        wanted = os.environ.get("CUDA_VISIBLE_DEVICES")
        if wanted is None:
            return handles
        chosen = []
        for item in (part.strip() for part in wanted.split(",") if part.strip()):
            if item.isdigit() and int(item) < len(handles):
                chosen.append(handles[int(item)])
            else:
                chosen += [(uuid, h) for uuid, h in handles if uuid.startswith(item)]
        return chosen

    def read(self) -> list[dict[str, Any]]:
        """Per device: uuid, energy counter (mJ, None where unsupported), memory, utilisation."""
        readings = []
        for uuid, handle in self.handles:
            reading: dict[str, Any] = {"uuid": uuid}
            for key, call in (
                ("energy_mj", lambda h: self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)),
                ("memory_used_bytes", lambda h: self.nvml.nvmlDeviceGetMemoryInfo(h).used),
                ("utilization_percent", lambda h: self.nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            ):
                try:
                    reading[key] = int(call(handle))
                except Exception:  # noqa: BLE001 - unsupported on this device
                    reading[key] = None
            readings.append(reading)
        return readings

    def close(self) -> None:
        if self.nvml is not None:
            # Shutting down a reader never fails a worker.
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
            self.nvml = None


class WorkerSampler:
    """One worker incarnation's figures since the plugin was set up, streamed to the client
    with `log_event` from a daemon thread (the worker's loop sends them)."""

    def __init__(self, worker: Any, run_id: str, topic: str, interval_s: float) -> None:
        self.worker = worker
        self.run_id = run_id
        self.topic = topic
        self.interval_s = interval_s
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_unix_s = time.time()
        self.process_started_unix_s = process_started_unix_s()
        self.cpu0_s = process_cpu_s()
        self.rss_peak_bytes = process_rss_bytes()
        self.rapl0 = rapl_counters()
        self.gpu = GpuReader()
        self.gpu0 = {r["uuid"]: r.get("energy_mj") for r in self.gpu.read()}
        self.gpu_peaks: dict[str, int] = {}
        self.gpu_util_sums: dict[str, list[float]] = {}
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.emit(self.snapshot())
        self._thread = threading.Thread(target=self._loop, name="jupyter-prov4ml-dask", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; the last sample goes out marked final (the worker left in order)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.interval_s)
        self.emit(self.snapshot(final=True))
        self.gpu.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.emit(self.snapshot())
            except Exception:  # noqa: BLE001 - a failed sample must not end the sampling
                continue

    def emit(self, sample: dict[str, Any]) -> None:
        send: Callable[..., Any] = self.worker.log_event
        # A closing worker's loop refuses it: the pull at the end remains.
        with contextlib.suppress(Exception):
            self.worker.loop.add_callback(send, self.topic, sample)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        """This incarnation's figures now (cumulative since setup)."""
        self.count += 1
        now = time.time()
        rss = process_rss_bytes()
        self.rss_peak_bytes = max(self.rss_peak_bytes, rss)
        gpus = []
        for reading in self.gpu.read():
            uuid = reading["uuid"]
            memory = reading.get("memory_used_bytes")
            if memory is not None:
                self.gpu_peaks[uuid] = max(self.gpu_peaks.get(uuid, 0), memory)
            util = reading.get("utilization_percent")
            if util is not None:
                sums = self.gpu_util_sums.setdefault(uuid, [0.0, 0.0])
                sums[0] += util
                sums[1] += 1
            start, end = self.gpu0.get(uuid), reading.get("energy_mj")
            sums = self.gpu_util_sums.get(uuid, [0.0, 0.0])
            gpus.append(
                {
                    "uuid": uuid,
                    "energy_mj": None if start is None or end is None else max(0, end - start),
                    "memory_peak_bytes": self.gpu_peaks.get(uuid),
                    "utilization_mean_percent": sums[0] / sums[1] if sums[1] else None,
                }
            )
        rapl = rapl_counters() if self.rapl0 else {}
        worker = self.worker
        return {
            "run_id": self.run_id,
            "name": str(worker.name),
            "address": str(worker.address),
            "host": self.host,
            "pid": self.pid,
            "nthreads": int(getattr(worker.state, "nthreads", 0) or 0),
            "at_unix_s": now,
            "started_unix_s": self.started_unix_s,
            "process_started_unix_s": self.process_started_unix_s,
            "cpu_s": max(0.0, process_cpu_s() - self.cpu0_s),
            "cpu_total_s": process_cpu_s(),
            "rss_bytes": rss,
            "rss_peak_bytes": self.rss_peak_bytes,
            "rapl_uj": rapl_delta_uj(self.rapl0, rapl) if rapl else None,
            "gpus": gpus,
            "samples": self.count,
            "final": final,
        }


def worker_plugin_class(base: type) -> type:
    """A WorkerPlugin subclass (of `base`, distributed's class) that samples its worker.
    Defined in a function so that cloudpickle ships the class itself, not a reference."""

    class RunWorkerSampler(base):  # type: ignore[misc,valid-type]
        idempotent = False

        def __init__(self, run_id: str, topic: str, interval_s: float) -> None:
            self.run_id = run_id
            self.topic = topic
            self.interval_s = interval_s
            self.sampler: WorkerSampler | None = None

        def setup(self, worker: Any) -> None:
            self.sampler = WorkerSampler(worker, self.run_id, self.topic, self.interval_s)
            self.sampler.start()

        def teardown(self, worker: Any) -> None:
            if self.sampler is not None:
                self.sampler.stop()
                self.sampler = None

    return RunWorkerSampler


async def final_snapshot(plugin_name: str, dask_worker: Any = None) -> dict[str, Any] | None:
    """Run on each live worker at the end (`Client.run`): send the heartbeat that carries the
    span's metrics to the scheduler, and return the incarnation's final figures."""
    # Without it the span's metrics lag by one heartbeat.
    with contextlib.suppress(Exception):
        await dask_worker.heartbeat()
    plugin = dask_worker.plugins.get(plugin_name)
    sampler = getattr(plugin, "sampler", None)
    if sampler is None:
        return None
    snapshot: dict[str, Any] = sampler.snapshot(final=True)
    return snapshot


def scheduler_plugin_class(base: type) -> type:
    """A SchedulerPlugin subclass collecting one row per task of the run that finished
    (placement and compute window), for the tasks of `span_id` (every task when None)."""

    class RunTaskLog(base):  # type: ignore[misc,valid-type]
        idempotent = False

        def __init__(self, span_id: str | None, limit: int = MAX_TASK_ROWS) -> None:
            self.span_id = span_id
            self.limit = limit
            self.rows: list[tuple[str, str, str, float, float, int, str]] = []
            self.dropped = 0
            self.scheduler: Any = None

        async def start(self, scheduler: Any) -> None:
            self.scheduler = scheduler

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            if start != "processing" or finish not in ("memory", "erred"):
                return
            task = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            if task is None:
                return
            if self.span_id is not None and getattr(task.group, "span_id", None) != self.span_id:
                return
            if len(self.rows) >= self.limit:
                self.dropped += 1
                return
            begin = end = 0.0
            for startstop in kwargs.get("startstops") or ():
                if startstop.get("action") == "compute":
                    begin, end = float(startstop["start"]), float(startstop["stop"])
            worker = kwargs.get("worker")
            self.rows.append(
                (
                    str(key)[:200],
                    str(task.prefix.name),
                    str(worker or ""),
                    begin,
                    end,
                    int(kwargs.get("nbytes") or 0),
                    finish,
                )
            )

    return RunTaskLog


def scheduler_figures(
    span_id: str | None, plugin_name: str, dask_scheduler: Any = None
) -> dict[str, Any]:
    """Run on the scheduler at the end: the span's per-task-group CPU metrics and the
    task rows the plugin kept; the plugin is removed (one round trip for both)."""
    metrics: list[list[Any]] = []
    extension = getattr(dask_scheduler, "extensions", {}).get("spans")
    span = extension.spans.get(span_id) if extension is not None and span_id else None
    if span is not None:
        for key, value in span.cumulative_worker_metrics.items():
            if isinstance(key, tuple) and len(key) == 4 and key[0] == "execute":
                metrics.append([str(key[1]), str(key[2]), str(key[3]), float(value)])
    plugin = dask_scheduler.plugins.get(plugin_name)
    if plugin is not None:
        with contextlib.suppress(Exception):  # gone already: nothing to remove
            dask_scheduler.remove_plugin(name=plugin_name)
    return {
        "metrics": metrics,
        "rows": list(getattr(plugin, "rows", ())),
        "dropped": int(getattr(plugin, "dropped", 0)),
    }
