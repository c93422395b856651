"""The kernel's process tree: CPU time and memory of the kernel and every descendant
(DataLoader workers, `multiprocessing` pools, subprocesses), read from /proc.

The tree's CPU time over a window is exact at its two edges without any sampling in between:
every process counts its own CPU (utime + stime) plus that of the children it reaped (cutime +
cstime), so the sum over the root and its living descendants only grows, and a child that dies
between two readings moves its whole CPU into its parent's reaped share. A worker started
before the window counts from the window's start; one started and reaped inside it, in full.

Walking `/proc/<pid>/task/*/children` costs ~66 µs a tick here, against 1.46 ms for
`psutil.Process().children(recursive=True)`, which scans every pid of the machine; psutil is
the fallback where /proc has no `children` files (not Linux, or a kernel built without them).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from jupyter_prov4ml.hardware.host import process_cpu_percent

# A tree larger than this is read in part (flagged), so a fork bomb cannot make a tick slow.
MAX_PROCESSES = 512
# The sampler lists each process's threads again every this many ticks (1 s at 10 Hz).
FULL_READ_EVERY = 10
# Per-process columns in the samples file for at most this many processes per run (the first
# seen); the tree's totals always cover every process.
MAX_PROCESS_COLUMNS = 64
PROCESS_COLUMN_PREFIX = "proc"


def is_process_column(name: str) -> bool:
    """Whether a sample column is one process's (`proc<pid>_…`), not a total."""
    return (
        name.startswith(PROCESS_COLUMN_PREFIX) and name[len(PROCESS_COLUMN_PREFIX) :][:1].isdigit()
    )


_TICKS_PER_S = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcessReading:
    """One process of the tree at one instant."""

    pid: int
    # Distinguishes a reused pid: the process's start time, in clock ticks since boot.
    started_ticks: int
    cpu_time_s: float  # its own user + system time
    reaped_cpu_time_s: float  # of the children it has waited for
    rss_bytes: int

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.started_ticks


@dataclass(frozen=True, slots=True)
class TreeReading:
    """The root (the kernel) and its living descendants at one instant."""

    at_s: float  # time.monotonic()
    root: ProcessReading
    descendants: tuple[ProcessReading, ...]
    truncated: bool = False

    @property
    def total_cpu_time_s(self) -> float:
        """CPU of the root and of every descendant, living or reaped (see the module doc)."""
        return sum(p.cpu_time_s + p.reaped_cpu_time_s for p in (self.root, *self.descendants))

    @property
    def children_cpu_time_s(self) -> float:
        """The part of `total_cpu_time_s` not spent in the root itself."""
        return self.total_cpu_time_s - self.root.cpu_time_s

    @property
    def rss_bytes(self) -> int:
        """Resident memory of the root and its living descendants (shared pages counted in
        each process, as `ps` does)."""
        return self.root.rss_bytes + sum(p.rss_bytes for p in self.descendants)

    def pids(self) -> frozenset[int]:
        return frozenset((self.root.pid, *(p.pid for p in self.descendants)))


def children_cpu_between(start: TreeReading, end: TreeReading) -> float:
    """CPU time the root's descendants spent between two readings (never negative)."""
    return max(0.0, end.children_cpu_time_s - start.children_cpu_time_s)


def parse_stat(pid: int, text: bytes) -> ProcessReading:
    """A `/proc/<pid>/stat` line; raises ValueError/IndexError for one that is not."""
    # The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return ProcessReading(
        pid=pid,
        started_ticks=int(fields[19]),
        cpu_time_s=(int(fields[11]) + int(fields[12])) / _TICKS_PER_S,
        reaped_cpu_time_s=(int(fields[13]) + int(fields[14])) / _TICKS_PER_S,
        rss_bytes=max(0, int(fields[21])) * _PAGE_BYTES,
    )


class ProcTreeReader:
    """Reads a process tree from /proc with descriptors kept open between ticks.

    Thread-safe: the sampler thread reads it every tick while the main thread reads it at a
    run's edges. `pread` on a kept `/proc/<pid>/stat` fails once its process is gone, even if
    the pid was reused, so a kept descriptor never reads another process.
    """

    def __init__(self, root_pid: int | None = None) -> None:
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._lock = threading.Lock()
        self._stat_fds: dict[int, int] = {}
        self._children_fds: dict[tuple[int, int], int] = {}
        # Each process's threads, listed again on a full read (a child started by a thread
        # that appeared since is found then; the CPU at a run's edges is read in full).
        self._tasks: dict[int, list[str]] = {}
        # Fails here (OSError) where /proc lacks what the walk needs: use the psutil reader.
        os.close(os.open(f"/proc/{self.root_pid}/task/{self.root_pid}/children", os.O_RDONLY))

    def read(self, full: bool = True) -> TreeReading:
        """The tree now; raises OSError when the root itself cannot be read. `full=False`
        reuses each known process's list of threads (one `listdir` fewer per process)."""
        with self._lock:
            root = self._stat(self.root_pid)
            if root is None:
                raise ProcessLookupError(f"process {self.root_pid} is gone")
            descendants: list[ProcessReading] = []
            seen_stats = {self.root_pid}
            seen_children: set[tuple[int, int]] = set()
            pending = [self.root_pid]
            truncated = False
            while pending:
                parent = pending.pop()
                for child in self._children(parent, seen_children, full):
                    if child in seen_stats:
                        continue
                    if len(seen_stats) > MAX_PROCESSES:
                        truncated = True
                        break
                    seen_stats.add(child)
                    reading = self._stat(child)
                    if reading is not None:
                        descendants.append(reading)
                        pending.append(child)
            self._forget(seen_stats, seen_children)
            return TreeReading(time.monotonic(), root, tuple(descendants), truncated)

    def close(self) -> None:
        with self._lock:
            self._forget(set(), set())

    def _stat(self, pid: int) -> ProcessReading | None:
        fd = self._stat_fds.get(pid)
        try:
            if fd is None:
                fd = self._stat_fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
            return parse_stat(pid, os.pread(fd, 1024, 0))
        except (OSError, ValueError, IndexError):
            # Gone (or a zombie being reaped) between the listing and the read.
            self._drop_stat(pid)
            return None

    def _drop_stat(self, pid: int) -> None:
        fd = self._stat_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def _children(self, pid: int, seen: set[tuple[int, int]], full: bool) -> Iterator[int]:
        tids = None if full else self._tasks.get(pid)
        if tids is None:
            try:
                tids = self._tasks[pid] = os.listdir(f"/proc/{pid}/task")
            except OSError:
                return
        for name in tids:
            key = (pid, int(name))
            seen.add(key)
            fd = self._children_fds.get(key)
            try:
                if fd is None:
                    fd = self._children_fds[key] = os.open(
                        f"/proc/{pid}/task/{name}/children", os.O_RDONLY
                    )
                text = os.pread(fd, 65536, 0)
            except OSError:
                continue
            for token in text.split():
                yield int(token)

    def _forget(self, stats: set[int], children: set[tuple[int, int]]) -> None:
        """Close the descriptors of processes and threads no longer in the tree."""
        for pid in [pid for pid in self._stat_fds if pid not in stats]:
            self._drop_stat(pid)
        for key in [key for key in self._children_fds if key not in children]:
            os.close(self._children_fds.pop(key))
        for pid in [pid for pid in self._tasks if pid not in stats]:
            del self._tasks[pid]


class PsutilTreeReader:
    """The same readings through psutil (macOS, or /proc without `children` files)."""

    def __init__(self, root_pid: int | None = None) -> None:
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self._root = psutil.Process(self.root_pid)

    def read(self, full: bool = True) -> TreeReading:
        root = self._reading(self._root)
        if root is None:
            raise ProcessLookupError(f"process {self.root_pid} is gone")
        descendants: list[ProcessReading] = []
        truncated = False
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            if len(descendants) >= MAX_PROCESSES:
                truncated = True
                break
            reading = self._reading(child)
            if reading is not None:
                descendants.append(reading)
        return TreeReading(time.monotonic(), root, tuple(descendants), truncated)

    def close(self) -> None:
        return None

    @staticmethod
    def _reading(process: psutil.Process) -> ProcessReading | None:
        try:
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
                started = process.create_time()
        except psutil.Error:
            return None
        return ProcessReading(
            pid=process.pid,
            started_ticks=round(started * _TICKS_PER_S),
            cpu_time_s=times.user + times.system,
            reaped_cpu_time_s=getattr(times, "children_user", 0.0)
            + getattr(times, "children_system", 0.0),
            rss_bytes=int(rss),
        )


TreeReader = ProcTreeReader | PsutilTreeReader


def open_tree_reader(root_pid: int | None = None) -> TreeReader:
    """The /proc reader where /proc has `children` files, else psutil's."""
    try:
        return ProcTreeReader(root_pid)
    except OSError:
        return PsutilTreeReader(root_pid)


@dataclass(frozen=True, slots=True)
class TreeTick:
    """The tree's totals and per-process figures at one tick, as sample columns."""

    reading: TreeReading
    cpu_percent: float  # the whole tree, % of one core (NaN: window too short)
    # (pid, cpu %, rss bytes) of each process given its own columns
    processes: tuple[tuple[int, float, int], ...] = ()

    @property
    def process_count(self) -> int:
        return 1 + len(self.reading.descendants)

    def columns(self) -> dict[str, float]:
        values = {
            "tree_cpu_percent": self.cpu_percent,
            "tree_rss_bytes": float(self.reading.rss_bytes),
            "tree_process_count": float(self.process_count),
        }
        for pid, cpu, rss in self.processes:
            values[f"{PROCESS_COLUMN_PREFIX}{pid}_cpu_percent"] = cpu
            values[f"{PROCESS_COLUMN_PREFIX}{pid}_rss_bytes"] = float(rss)
        return values


class TreeSampler:
    """Turns successive tree readings into CPU rates, for the sampler thread (one per run)."""

    def __init__(self, reader: TreeReader, cores: int | None = None) -> None:
        self.reader = reader
        self._cores = cores or os.cpu_count() or 1
        self._last: TreeReading | None = None
        self._last_cpu: dict[tuple[int, int], float] = {}
        # Processes with their own columns: a pid keeps its columns for the whole run.
        self._columned: set[int] = set()
        self._ticks = 0

    def prime(self) -> None:
        self._last = self.reader.read()
        self._last_cpu = {p.key: p.cpu_time_s for p in (self._last.root, *self._last.descendants)}

    def tick(self) -> TreeTick:
        self._ticks += 1
        reading = self.reader.read(full=self._ticks % FULL_READ_EVERY == 0)
        last = self._last
        wall_s = reading.at_s - last.at_s if last is not None else 0.0
        total = (
            process_cpu_percent(
                reading.total_cpu_time_s - last.total_cpu_time_s, wall_s, self._cores
            )
            if last is not None
            else math.nan
        )
        processes = []
        cpu_now: dict[tuple[int, int], float] = {}
        for process in (reading.root, *reading.descendants):
            cpu_now[process.key] = process.cpu_time_s
            if process.pid not in self._columned:
                if len(self._columned) >= MAX_PROCESS_COLUMNS:
                    continue
                self._columned.add(process.pid)
            before = self._last_cpu.get(process.key)
            cpu = (
                math.nan
                if before is None
                else process_cpu_percent(process.cpu_time_s - before, wall_s, self._cores)
            )
            processes.append((process.pid, cpu, process.rss_bytes))
        # A window too short for clock ticks (NaN) is measured again from the same start.
        if total == total or last is None:
            self._last, self._last_cpu = reading, cpu_now
        return TreeTick(reading, total, tuple(processes))
