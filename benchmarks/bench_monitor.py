"""The monitor process outside the kernel: what it costs, and what it adds to a `%%provrun`.

Proves: (1) the monitor sampling a run at 10 Hz uses <= 1 % of a core and (2) <= 25 MB RSS
(read from its /proc while it samples this process, for `WINDOW_S`); (3) with the monitor
running, `%%provrun --no-graph --no-live` on `pass` costs <= 1 ms more than without it (cell
start and end: one pipe write each, the gap check at the end), interleaved in one shell.
Reports (4), with no target, the first `%%provrun` of a session, which starts the monitor
(`fork` + `exec`; its imports run beside the cell), against a later one.

Run alone: `python benchmarks/bench_monitor.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report
from _shell import drain_writer, isolated_shell, load_extension

from jupyter_prov4ml.kernel.monitor_client import MonitorHandle
from jupyter_prov4ml.store.layout import Store

WINDOW_S = 10.0
CPU_TARGET_PERCENT = 1.0
RSS_TARGET_MB = 25.0
OVERHEAD_TARGET_MS = 1.0
PROVRUN = "%%provrun --no-graph --no-live\npass\n"
ROUNDS = 30
FIRST_ROUNDS = 5
MS = 1e3
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_bytes()
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchmarkError("no VmRSS")


def monitor_cost() -> tuple[float, float, int]:
    """CPU % of one core and peak RSS (MB) of a monitor sampling this process at 10 Hz."""
    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-") as tmp:
        store = Store(Path(tmp) / "store")
        monitor = MonitorHandle.start(store, "bench-session")
        try:
            time.sleep(1.0)  # its imports done
            if not monitor.begin_run("bench-session-00001", 0.1, time.monotonic()):
                raise BenchmarkError("the monitor did not take the run")
            time.sleep(1.0)
            cpu0, t0, peak = _cpu_s(monitor.pid), time.monotonic(), 0.0
            while time.monotonic() - t0 < WINDOW_S:
                time.sleep(0.5)
                peak = max(peak, _rss_mb(monitor.pid))
            cpu = 100.0 * (_cpu_s(monitor.pid) - cpu0) / (time.monotonic() - t0)
            path = store.session_dir("bench-session") / "monitor"
            lines = sum(len(p.read_bytes().splitlines()) for p in path.glob("*.samples.jsonl"))
        finally:
            monitor.stop()
    return cpu, peak, lines


def _cell(shell: Any, source: str) -> float:
    start = time.perf_counter()
    result = shell.run_cell(source, store_history=True)
    elapsed = time.perf_counter() - start
    if not result.success:
        raise BenchmarkError(f"cell failed: {result.error_in_exec!r}")
    return elapsed


def provrun_cost() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    with isolated_shell() as shell:
        extension = load_extension(shell)
        for _ in range(3):
            _cell(shell, PROVRUN)
        drain_writer(extension)

        def arm(with_monitor: bool) -> float:
            extension._monitor_unavailable = not with_monitor
            drain_writer(extension)
            return _cell(shell, PROVRUN)

        steady = interleave({"on": lambda: arm(True), "off": lambda: arm(False)}, ROUNDS)
        extension._monitor_unavailable = False

        def first(start_one: bool) -> float:
            if start_one:
                extension.stop_monitor()  # the next %%provrun starts a new one
            drain_writer(extension)
            return _cell(shell, PROVRUN)

        starts = interleave(
            {"first": lambda: first(True), "later": lambda: first(False)}, FIRST_ROUNDS
        )
        if extension.monitor is None:
            raise BenchmarkError("no monitor was started: nothing measured")
        drain_writer(extension)
    return steady, starts


def main() -> list[Result]:
    cpu, rss, lines = monitor_cost()
    steady, starts = provrun_cost()
    return [
        checked(
            "monitor CPU at 10 Hz (% of a core)",
            cpu,
            "%",
            None,
            CPU_TARGET_PERCENT,
            target_is_overhead=False,
            note=f"{lines} samples journaled in {WINDOW_S + 1:.0f} s",
        ),
        checked(
            "monitor peak RSS",
            rss,
            "MB",
            None,
            RSS_TARGET_MB,
            target_is_overhead=False,
        ),
        checked(
            "%%provrun with the monitor vs without",
            median(steady["on"]) * MS,
            "ms",
            median(steady["off"]) * MS,
            OVERHEAD_TARGET_MS,
            note="cell start + end, monitor already running",
        ),
        checked(
            "first %%provrun (starts the monitor) vs a later one",
            median(starts["first"]) * MS,
            "ms",
            median(starts["later"]) * MS,
            None,
            note="fork + exec of the monitor, once per session",
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
