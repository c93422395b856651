"""Cost of reading the kernel's process tree (issue 12), with 8 idle child processes.

Proves: (1) one tree tick (`TreeSampler.tick`: the `/proc/<pid>/task/*/children` walk, each
process's `stat`, CPU rates and per-process columns) costs <= 200 µs with 8 children; the
baseline is the same reading through psutil (`Process.children(recursive=True)`, which scans
every pid of the machine), measured in the same run; (2) the sampler thread at 10 Hz with the
tree read costs <= 1 % of a core (the thread's own CPU clock over wall time), against the same
sampler without the tree, interleaved.

Run alone: `python benchmarks/bench_process_tree.py` (about 20 s).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report

CHILDREN = 8
TICK_TARGET_US = 200.0
SAMPLER_TARGET_PERCENT = 1.0
INTERVAL_S = 0.1
TICKS = 300
TICK_ROUNDS = 7
WINDOW_S = 2.0
SAMPLER_ROUNDS = 4
SAMPLER_THREAD = "jupyter-prov4ml-sampler"


@contextmanager
def _idle_children(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` child processes that wait on their stdin (as idle DataLoader workers do)."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        for _ in range(count)
    ]
    try:
        yield children
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait()


def _tick_us(make: Callable[[], Any]) -> Callable[[], float]:
    """Median-ready: the mean cost of TICKS ticks of a fresh TreeSampler over `make()`."""
    from jupyter_prov4ml.hardware.process_tree import TreeSampler

    def measure() -> float:
        reader = make()
        sampler = TreeSampler(reader)
        sampler.prime()
        started = time.perf_counter()
        for _ in range(TICKS):
            tick = sampler.tick()
        elapsed = time.perf_counter() - started
        reader.close()
        if tick.process_count < CHILDREN + 1:
            raise BenchmarkError(f"the tree has {tick.process_count} processes")
        return elapsed / TICKS * 1e6

    return measure


def _sampler_thread_cpu_s() -> float:
    for thread in threading.enumerate():
        if thread.name == SAMPLER_THREAD and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    raise BenchmarkError("no sampler thread")


def _sampler_percent(with_tree: bool) -> Callable[[], float]:
    from jupyter_prov4ml.hardware.gpu import NullGpu
    from jupyter_prov4ml.hardware.host import open_host_reader
    from jupyter_prov4ml.hardware.process_tree import TreeSampler, open_tree_reader
    from jupyter_prov4ml.hardware.sampler import Sampler
    from jupyter_prov4ml.notices import Notices

    def measure() -> float:
        tree = TreeSampler(open_tree_reader()) if with_tree else None
        sampler = Sampler(open_host_reader(), NullGpu("bench"), Notices(), INTERVAL_S, tree=tree)
        sampler.start()
        time.sleep(0.005)  # let it prime, off the clock
        cpu0, wall0 = _sampler_thread_cpu_s(), time.perf_counter()
        time.sleep(WINDOW_S)
        cpu1, wall1 = _sampler_thread_cpu_s(), time.perf_counter()
        samples = sampler.stop()
        if with_tree and "tree_process_count" not in samples.columns:
            raise BenchmarkError("the sampler did not read the tree")
        return 100.0 * (cpu1 - cpu0) / (wall1 - wall0)

    return measure


def main() -> list[Result]:
    from jupyter_prov4ml.hardware.process_tree import ProcTreeReader, PsutilTreeReader

    with _idle_children(CHILDREN):
        time.sleep(0.5)  # the children are up
        ticks = interleave(
            {"proc": _tick_us(ProcTreeReader), "psutil": _tick_us(PsutilTreeReader)},
            TICK_ROUNDS,
        )
        sampler = interleave(
            {"tree": _sampler_percent(True), "no tree": _sampler_percent(False)},
            SAMPLER_ROUNDS,
        )
    proc_us, psutil_us = median(ticks["proc"]), median(ticks["psutil"])
    return [
        checked(
            f"process-tree tick, {CHILDREN} children (/proc walk vs psutil)",
            proc_us,
            "µs",
            psutil_us,
            TICK_TARGET_US,
            target_is_overhead=False,
            note=f"{psutil_us / proc_us:.1f}x faster than psutil",
        ),
        checked(
            f"sampler thread at 10 Hz with the tree, {CHILDREN} children",
            median(sampler["tree"]),
            "% core",
            median(sampler["no tree"]),
            SAMPLER_TARGET_PERCENT,
            target_is_overhead=False,
            note="baseline: the same sampler without the tree",
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
