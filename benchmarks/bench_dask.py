"""Cost of capturing a Dask cluster in a `%%provrun`, on a LocalCluster of two worker processes.

Proves: (1) what the capture adds to the cell's start (span, subscription, worker and
scheduler plugins registered) and (2) to its end (heartbeat + final figures pulled, span
metrics and task rows read, plugins removed) are each <= 50 ms; (3) a workload of 1,000 small
tasks runs <= 1 % slower with the capture on than without, both arms interleaved in this run,
and (4) costs the cluster (client, scheduler, workers) <= 1 % more CPU: wall time on a shared
2-vCPU VM varies by tens of % between identical arms, CPU time far less.
(The issue's workload is 1,000-10,000 tasks over ~30 s; this one is ~1-2 s per arm to keep
the suite short, which makes it noisier, not kinder: the capture's fixed costs weigh more.)

Run alone: `python benchmarks/bench_dask.py`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report

EDGE_TARGET_MS = 50.0
WORKLOAD_TARGET_RATIO = 1.01
EDGE_ROUNDS = 10
WORKLOAD_ROUNDS = 4
TASKS = 1_000
TASK_CPU_S = 0.002
MS = 1e3


def burn(seconds: float) -> float:
    """A task holding a core for `seconds` of its process's CPU clock."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return seconds


def _process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _cluster_cpu_s(client: Any) -> float:
    """CPU seconds so far of this process (client and LocalCluster's scheduler) and of the
    workers: less disturbed than wall time by other work on a shared machine."""
    return _process_cpu_s() + sum(client.run(_process_cpu_s).values())


def _workload(client: Any, cpu: list[float] | None = None) -> float:
    """Wall seconds of the workload; its cluster CPU seconds appended to `cpu`."""
    cpu_before = _cluster_cpu_s(client) if cpu is not None else 0.0
    start = time.perf_counter()
    futures = client.map(burn, [TASK_CPU_S] * TASKS, pure=False)
    client.gather(futures)
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(_cluster_cpu_s(client) - cpu_before)
    return elapsed


def main() -> list[Result]:
    try:
        import distributed
    except ImportError as error:
        raise BenchmarkError(
            "dask[distributed] is not installed (pip install -e .[test])"
        ) from error
    from jupyter_prov4ml.cluster.cluster_capture import ClusterCapture
    from jupyter_prov4ml.settings import EnergyConfig

    problems: list[str] = []

    def warn(key: str, message: str) -> None:
        problems.append(message)

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        client.gather(client.map(burn, [0.001] * 20, pure=False))  # warm: functions shipped
        starts: list[float] = []
        ends: list[float] = []
        for index in range(EDGE_ROUNDS):
            began = time.perf_counter()
            capture = ClusterCapture.begin(f"bench-{index}", warn)
            started = time.perf_counter()
            client.submit(burn, 0.001, pure=False).result()
            finishing = time.perf_counter()
            result = capture.finish(EnergyConfig())
            ends.append(time.perf_counter() - finishing)
            starts.append(started - began)
            if len(result.workers) != 2 or not result.task_groups:
                raise BenchmarkError(f"the capture saw no workers or tasks ({problems[-3:]})")

        cpu: dict[str, list[float]] = {"captured": [], "bare": []}

        def captured() -> float:
            capture = ClusterCapture.begin("bench-workload", warn)
            try:
                return _workload(client, cpu["captured"])
            finally:
                capture.finish(EnergyConfig())

        arms = interleave(
            {"captured": captured, "bare": lambda: _workload(client, cpu["bare"])},
            WORKLOAD_ROUNDS,
        )
    finally:
        client.close()
        cluster.close()
    if problems:
        raise BenchmarkError(f"the capture reported problems: {problems[:3]}")
    bare, with_capture = median(arms["bare"]), median(arms["captured"])
    cpu_bare, cpu_captured = median(cpu["bare"]), median(cpu["captured"])
    return [
        checked(
            "Dask capture: added to cell start",
            median(starts) * MS,
            "ms",
            None,
            EDGE_TARGET_MS,
            target_is_overhead=False,
            note=f"2 workers; median of {EDGE_ROUNDS}: span, subscription, two plugins",
        ),
        checked(
            "Dask capture: added to cell end",
            median(ends) * MS,
            "ms",
            None,
            EDGE_TARGET_MS,
            target_is_overhead=False,
            note="heartbeat + final pull, span metrics + task rows, plugins removed",
        ),
        checked(
            f"Dask capture: {TASKS:,} tasks, ratio to bare",
            with_capture / bare,
            "x",
            None,
            WORKLOAD_TARGET_RATIO,
            target_is_overhead=False,
            note=(
                f"{TASKS:,} x {TASK_CPU_S * MS:g} ms tasks on 2 workers: captured "
                f"{with_capture:.3f} s vs bare {bare:.3f} s (medians of {WORKLOAD_ROUNDS}, "
                "interleaved; capture's start and end excluded, they are the rows above). "
                "Wall time on a shared 2-vCPU VM varies by tens of % between identical arms"
            ),
        ),
        checked(
            f"Dask capture: {TASKS:,} tasks, cluster CPU ratio",
            cpu_captured / cpu_bare,
            "x",
            None,
            WORKLOAD_TARGET_RATIO,
            target_is_overhead=False,
            note=(
                f"CPU seconds of client+scheduler+workers for the workload: captured "
                f"{cpu_captured:.3f} s vs bare {cpu_bare:.3f} s (medians; the burn alone is "
                f"{TASKS * TASK_CPU_S:.1f} s)"
            ),
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
