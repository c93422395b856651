"""The process-tree reader on real child processes: the /proc walk and psutil agree, CPU over
a window counts children alive at both edges and those reaped in between, and a GPU's
per-process figures (through the fake NVML) are matched against the tree."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fake_nvml import FakeGpu, FakeNvml
from jupyter_prov4ml.hardware.gpu import GpuProbe, open_gpu_probe
from jupyter_prov4ml.hardware.host import open_host_reader
from jupyter_prov4ml.hardware.process_tree import (
    MAX_PROCESS_COLUMNS,
    ProcTreeReader,
    PsutilTreeReader,
    TreeSampler,
    children_cpu_between,
    is_process_column,
    open_tree_reader,
    parse_stat,
)
from jupyter_prov4ml.hardware.sampler import Sampler
from jupyter_prov4ml.notices import Notices

BURN = (
    "import sys, time\n"
    "end = time.process_time() + float(sys.argv[1])\n"
    "while time.process_time() < end: pass\n"
    "sys.stdout.write('done\\n'); sys.stdout.flush()\n"
    "sys.stdin.read()\n"  # stays alive until told
)
# A grandchild: the child starts a burner and waits for it (so reaps it) before it says done.
NESTED = (
    "import subprocess, sys\n"
    "subprocess.run([sys.executable, '-c', 'import sys, time\\nend = time.process_time() + "
    "float(sys.argv[1])\\nwhile time.process_time() < end: pass', sys.argv[1]], check=True)\n"
    "sys.stdout.write('done\\n'); sys.stdout.flush()\n"
    "sys.stdin.read()\n"
)


def _start(code: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[str]]:
    """A child that waits for its stdin to close (spends no CPU)."""
    process = _start(BURN, 0.0)
    assert process.stdout is not None and process.stdout.readline() == "done\n"
    yield process
    _finish(process)


def test_parse_stat_reads_fields_after_a_command_name_with_spaces_and_parens() -> None:
    """The command name may hold ') (': fields are read after the last ')'."""
    tail = " ".join(["S", *["0"] * 10, "250", "50", "100", "0", *["0"] * 4, "777", "0", "3"])
    reading = parse_stat(42, f"42 (a) (b c) {tail}".encode())
    ticks = os.sysconf("SC_CLK_TCK")
    assert reading.cpu_time_s == pytest.approx(300 / ticks)
    assert reading.reaped_cpu_time_s == pytest.approx(100 / ticks)
    assert reading.started_ticks == 777
    assert reading.rss_bytes == 3 * os.sysconf("SC_PAGE_SIZE")


def test_proc_walk_and_psutil_see_the_same_tree(sleeper: subprocess.Popen[str]) -> None:
    """Both readers list this process's living children, with their memory."""
    proc = ProcTreeReader()
    try:
        walked = {p.pid for p in proc.read().descendants}
    finally:
        proc.close()
    listed = {p.pid for p in PsutilTreeReader().read().descendants}
    assert sleeper.pid in walked
    assert walked == listed
    assert isinstance(open_tree_reader(), ProcTreeReader)


def test_window_cpu_counts_children_alive_at_both_edges_and_reaped_between() -> None:
    """A child started before the window and alive after it counts from the window's start;
    one started and reaped inside it (with its own reaped grandchild) counts in full."""
    early = _start(BURN, 0.3)
    assert early.stdout is not None and early.stdout.readline() == "done\n"
    reader = ProcTreeReader()
    start = reader.read()
    before = os.times()
    assert early.pid in {p.pid for p in start.descendants}
    inside = _start(BURN, 0.4)
    nested = _start(NESTED, 0.3)
    for process in (inside, nested):
        assert process.stdout is not None and process.stdout.readline() == "done\n"
    _finish(inside)
    middle = reader.read()
    end = reader.read()
    after = os.times()
    reaped = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    assert inside.pid not in {p.pid for p in end.descendants}
    nested_now = next(p for p in end.descendants if p.pid == nested.pid)
    window = children_cpu_between(start, end)
    # the reaped burner (os.times) + the living nested child with its reaped grandchild; the
    # early child's 0.3 s, spent before the window, is not in it
    expected = reaped + nested_now.cpu_time_s + nested_now.reaped_cpu_time_s
    assert window == pytest.approx(expected, abs=0.05)
    assert window >= 0.4 + 0.3 - 0.05
    assert children_cpu_between(middle, end) >= 0.0
    reader.close()
    _finish(nested)
    _finish(early)


def test_tree_sampler_gives_totals_and_bounded_per_process_columns(
    sleeper: subprocess.Popen[str],
) -> None:
    """A tick's columns: the tree's CPU %, RSS and process count, and per-process CPU % and
    RSS for at most MAX_PROCESS_COLUMNS processes."""
    sampler = TreeSampler(ProcTreeReader())
    sampler.prime()
    time.sleep(0.06)  # a window long enough for clock ticks; no assertion on how long
    tick = sampler.tick()
    columns = tick.columns()
    assert columns["tree_process_count"] >= 2
    assert columns["tree_rss_bytes"] > 0
    assert f"proc{sleeper.pid}_rss_bytes" in columns
    assert math.isfinite(columns[f"proc{os.getpid()}_cpu_percent"])
    assert len([c for c in columns if c.endswith("_rss_bytes") and is_process_column(c)]) <= (
        MAX_PROCESS_COLUMNS
    )


def _probe(fake: FakeNvml) -> GpuProbe:
    probe = open_gpu_probe(fake, environ={})
    assert isinstance(probe, GpuProbe)
    return probe


def test_gpu_use_is_matched_against_the_tree(sleeper: subprocess.Popen[str]) -> None:
    """NVML's per-process memory and SM utilisation are kept for the tree's pids only, summed
    as the tree's figures; another process's use is not ours."""
    me, child, stranger = os.getpid(), sleeper.pid, 1
    gpu = FakeGpu(
        compute_processes=[(me, 2**30), (child, 3 * 2**30), (stranger, 5 * 2**30)],
        process_utilization=[
            (me, 100, 10),
            (child, 100, 20),
            (child, 200, 30),
            (stranger, 200, 40),
        ],
    )
    probe = _probe(FakeNvml([gpu]))
    (sample,) = probe.read(frozenset({me, child}))
    assert sample.process_memory_bytes == 2**30
    assert {use.pid: use.memory_bytes for use in sample.processes} == {me: 2**30, child: 3 * 2**30}
    assert {use.pid: use.sm_utilization_percent for use in sample.processes} == {
        me: 10.0,
        child: 30.0,
    }
    assert sample.tree_memory_bytes == 4 * 2**30
    assert sample.tree_sm_utilization_percent == 40.0
    assert not sample.device_level
    columns = sample.tree_columns()
    assert columns[f"proc{child}_gpu0_memory_bytes"] == 3 * 2**30
    assert f"proc{stranger}_gpu0_memory_bytes" not in columns
    # The next read asks only for newer utilisation samples: none, NVML says NotFound.
    (again,) = probe.read(frozenset({me, child}))
    assert again.tree_sm_utilization_percent == 0.0
    assert again.tree_memory_bytes == 4 * 2**30
    probe.close()


def test_gpu_use_falls_back_to_the_device_flagged_where_pids_are_host_pids() -> None:
    """In a container NVML lists host PIDs this namespace cannot see: the tree's figures are
    the device's, flagged `device_level`."""
    invisible = 4_000_000  # above pid_max: no such process here
    gpu = FakeGpu(
        memory_used_bytes=6 * 2**30,
        utilization_gpu=70,
        compute_processes=[(invisible, 6 * 2**30)],
    )
    probe = _probe(FakeNvml([gpu]))
    (sample,) = probe.read(frozenset({os.getpid()}))
    assert sample.device_level
    assert sample.tree_memory_bytes == 6 * 2**30
    assert sample.tree_sm_utilization_percent == 70.0
    assert sample.tree_columns()["gpu0_device_level"] == 1.0
    probe.close()


def test_gpu_without_per_process_queries_keeps_its_device_figures() -> None:
    """A GPU answering NotSupported to the per-process queries gives no tree figures and is
    not asked again; its device figures are read as before."""
    fake = FakeNvml(
        [
            FakeGpu(
                unsupported={
                    "nvmlDeviceGetProcessUtilization",
                    "nvmlDeviceGetComputeRunningProcesses",
                    "nvmlDeviceGetGraphicsRunningProcesses",
                }
            )
        ]
    )
    probe = _probe(fake)
    for _ in range(3):
        (sample,) = probe.read(frozenset({os.getpid()}))
        assert sample.tree_memory_bytes is None and sample.tree_columns() == {}
        assert sample.utilization_percent == 50.0
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 1
    probe.close()


def test_sampler_reads_the_tree_and_gives_the_gpu_its_pids(
    sleeper: subprocess.Popen[str],
) -> None:
    """The sampler thread's ticks carry the tree, and the GPU's figures for the tree's pids."""
    gpu = FakeGpu(compute_processes=[(sleeper.pid, 2**20)])
    fake = FakeNvml([gpu])
    probe = _probe(fake)
    sampler = Sampler(
        open_host_reader(), probe, Notices(), 0.02, tree=TreeSampler(ProcTreeReader())
    )
    sampler.start()
    fake.wait_until(lambda nvml: nvml.calls.get("nvmlDeviceGetProcessUtilization", 0) >= 3)
    samples = sampler.stop()
    assert max(samples.column("tree_process_count")) >= 2
    assert max(samples.column("gpu0_tree_memory_bytes")) == 2**20
    assert f"proc{sleeper.pid}_gpu0_memory_bytes" in samples.columns
    summarised = [name for name, _ in samples.summary(0.02).series]
    assert "gpu0_tree_memory_bytes" in summarised
    assert not [name for name in summarised if is_process_column(name)]
    assert "process_rss_bytes" in summarised  # the kernel's own series are not per-process
    probe.close()
