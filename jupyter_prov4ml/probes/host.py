"""Host readings through psutil and /proc. Used by the sampler thread and once at load,
never from a cell hook (a psutil call there costs 0.1–1 ms per cell)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import psutil

from ..records import HostSample


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


class HostReader:
    """Reads this process's and the system's CPU and memory use for the sampler."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def prime(self) -> None:
        """Start both CPU counters: `cpu_percent(None)` measures since the previous call, so
        without this the first sample of a run would cover the time since the last run."""
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)

    def read(self, elapsed_s: float) -> HostSample:
        with self._process.oneshot():
            cpu = self._process.cpu_percent(None)
            rss = self._process.memory_info().rss
        memory = psutil.virtual_memory()
        return HostSample(
            elapsed_s=elapsed_s,
            process_cpu_percent=cpu,
            process_rss_bytes=int(rss),
            system_cpu_percent=psutil.cpu_percent(None),
            system_memory_used_bytes=int(memory.total - memory.available),
        )
