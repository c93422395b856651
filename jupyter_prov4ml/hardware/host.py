"""Host readings through psutil and /proc. Used by the sampler thread and once at load,
never from a cell hook (a psutil call there costs 0.1–1 ms per cell)."""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass

import psutil

from jupyter_prov4ml.records import HostSample


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What does not change during a session."""

    hostname: str
    cpu_model: str
    cpu_count_logical: int
    memory_total_bytes: int
    platform: str
    python_version: str

    def describe(self) -> str:
        return f"{self.cpu_model} ({self.cpu_count_logical} cores)"


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_facts() -> HostFacts:
    """Read the static host facts once."""
    return HostFacts(
        hostname=platform.node(),
        cpu_model=cpu_model_name(),
        cpu_count_logical=os.cpu_count() or 1,
        memory_total_bytes=int(psutil.virtual_memory().total),
        platform=platform.platform(),
        python_version=platform.python_version(),
    )


# CPU time is counted in clock ticks (10 ms): a shorter window would turn one tick into
# thousands of percent. Below this, a sample has no CPU figure (NaN) and the next covers more.
MIN_CPU_WINDOW_S = 0.05


def process_cpu_percent(cpu_s: float, wall_s: float, cores: int) -> float:
    """CPU use over a window, in % of one core: NaN for a window too short to measure, and
    never above 100 % × the logical cores."""
    if not wall_s >= MIN_CPU_WINDOW_S:
        return math.nan
    return min(100.0 * cores, max(0.0, 100.0 * cpu_s / wall_s))


class ProcHostReader:
    """Linux: the same readings from kept /proc file descriptors and `os.times()`.

    psutil re-opens /proc files on every call (~0.7 ms a tick here); `pread` on descriptors
    opened once costs ~20 µs, which halves the sampler's idle cost.
    """

    def __init__(self) -> None:
        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
        self._stat = os.open("/proc/stat", os.O_RDONLY)
        self._meminfo = os.open("/proc/meminfo", os.O_RDONLY)
        self._page_bytes = os.sysconf("SC_PAGE_SIZE")
        self._cores = os.cpu_count() or 1
        self._last = self._counters()

    def _counters(self) -> tuple[float, float, int, int]:
        times = os.times()
        first_line = os.pread(self._stat, 1024, 0).split(b"\n", 1)[0]
        jiffies = [int(v) for v in first_line.split()[1:]]
        # idle + iowait count as not busy, as in psutil.cpu_percent
        return time.monotonic(), times.user + times.system, sum(jiffies), jiffies[3] + jiffies[4]

    def prime(self) -> None:
        self._last = self._counters()

    def read(self, elapsed_s: float) -> HostSample:
        now, cpu_s, total, idle = counters = self._counters()
        last_now, last_cpu_s, last_total, last_idle = self._last
        process = process_cpu_percent(cpu_s - last_cpu_s, now - last_now, self._cores)
        if process == process:  # a window long enough: the next one starts here
            self._last = counters
        ticks = max(1, total - last_total)
        system = 100.0 * (ticks - (idle - last_idle)) / ticks
        rss_pages = int(os.pread(self._statm, 256, 0).split()[1])
        memory: dict[bytes, int] = {}
        for line in os.pread(self._meminfo, 4096, 0).split(b"\n"):
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable"):
                memory[key] = int(rest.split()[0]) * 1024
                if len(memory) == 2:
                    break
        return HostSample(
            elapsed_s=elapsed_s,
            process_cpu_percent=process,
            process_rss_bytes=rss_pages * self._page_bytes,
            system_cpu_percent=min(100.0, max(0.0, system)),
            system_memory_used_bytes=memory[b"MemTotal"] - memory[b"MemAvailable"],
        )

    def close(self) -> None:
        for fd in (self._statm, self._stat, self._meminfo):
            os.close(fd)


def open_host_reader() -> ProcHostReader | HostReader:
    """The /proc reader where /proc has what it needs (Linux), else psutil's."""
    try:
        reader = ProcHostReader()
        reader.read(0.0)
    except (OSError, ValueError, IndexError, KeyError):
        return HostReader()
    return reader


class HostReader:
    """Reads this process's and the system's CPU and memory use for the sampler (psutil)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._last = self._process_cpu()

    def _process_cpu(self) -> tuple[float, float]:
        times = self._process.cpu_times()
        return time.monotonic(), times.user + times.system

    def prime(self) -> None:
        """Start both CPU counters, so the first sample of a run does not cover the time
        since the last run (`cpu_percent(None)` measures since the previous call)."""
        self._last = self._process_cpu()
        psutil.cpu_percent(None)

    def close(self) -> None:
        return None

    def read(self, elapsed_s: float) -> HostSample:
        with self._process.oneshot():
            now, cpu_s = counters = self._process_cpu()
            rss = self._process.memory_info().rss
        cpu = process_cpu_percent(cpu_s - self._last[1], now - self._last[0], self._cores)
        if cpu == cpu:
            self._last = counters
        memory = psutil.virtual_memory()
        return HostSample(
            elapsed_s=elapsed_s,
            process_cpu_percent=cpu,
            process_rss_bytes=int(rss),
            system_cpu_percent=min(100.0, max(0.0, psutil.cpu_percent(None))),
            system_memory_used_bytes=int(memory.total - memory.available),
        )
