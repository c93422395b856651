"""Why a kernel died, read from outside it: the cgroup's OOM-kill count, SLURM's end time, the
zombie's exit signal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from jupyter_prov4ml.hardware.crash_cause import (
    TEST_MEMORY_EVENTS_ENV,
    CauseWatch,
    exit_signal,
    memory_events_path,
    oom_kills,
)


def test_oom_kill_count_from_v2_and_v1_files(tmp_path: Path) -> None:
    """cgroup v2's memory.events and v1's memory.oom_control both carry `oom_kill N`."""
    v2 = tmp_path / "memory.events"
    v2.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 3\noom_group_kill 0\n")
    v1 = tmp_path / "memory.oom_control"
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
    assert oom_kills(v2) == 3 and oom_kills(v1) == 7
    assert oom_kills(tmp_path / "missing") is None and oom_kills(None) is None
    (tmp_path / "junk").write_text("oom_kill lots\n")
    assert oom_kills(tmp_path / "junk") is None


def test_the_kernels_cgroup_is_found_under_the_cgroup_root(tmp_path: Path) -> None:
    """This process's cgroup (from /proc/self/cgroup) located under a stand-in root."""
    lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    expected = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            expected = tmp_path / path.lstrip("/") / "memory.events"
        elif "memory" in controllers.split(","):
            expected = tmp_path / "memory" / path.lstrip("/") / "memory.oom_control"
            break
    assert expected is not None
    expected.parent.mkdir(parents=True, exist_ok=True)
    expected.write_text("oom_kill 0\n")
    assert memory_events_path(os.getpid(), {}, tmp_path) == expected
    assert memory_events_path(os.getpid(), {TEST_MEMORY_EVENTS_ENV: "/x"}, tmp_path) == Path("/x")


def test_causes_in_order_oom_then_time_limit_then_unknown(tmp_path: Path) -> None:
    """A rising OOM count wins; else a SLURM job past its end time; else unknown."""
    events = tmp_path / "memory.events"
    events.write_text("oom_kill 1\n")
    environ = {TEST_MEMORY_EVENTS_ENV: str(events), "SLURM_JOB_END_TIME": "1000"}
    watch = CauseWatch.start(os.getpid(), environ)
    assert watch.cause(2000.0).startswith("job time limit")
    assert watch.cause(100.0) == "killed (cause unknown)"
    events.write_text("oom_kill 2\n")
    assert watch.cause(2000.0).startswith("OOM kill")
    assert CauseWatch.start(os.getpid(), {"SLURM_JOB_END_TIME": "soon"}).slurm_end_unix_s is None


def test_a_zombies_exit_signal_is_read_before_it_is_reaped() -> None:
    """A child killed by SIGKILL and not yet reaped reads as killed by signal 9."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert exit_signal(child.pid) is None, "alive: no exit signal"
        os.kill(child.pid, 9)
        deadline = time.monotonic() + 60
        while exit_signal(child.pid) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert exit_signal(child.pid) == 9
        assert "SIGKILL" in CauseWatch(child.pid, None, None, None).cause(0.0)
    finally:
        child.kill()
        child.wait()
    assert exit_signal(child.pid) is None, "reaped: nothing to read"
