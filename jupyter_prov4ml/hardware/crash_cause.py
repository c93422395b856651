"""Why a kernel died, as far as it can be told from outside it: the monitor process
(`kernel/monitor_process.py`) reads these before the kernel dies and again right after.

- An OOM kill: the kernel's memory cgroup counts its OOM kills (`oom_kill` in cgroup v2's
  `memory.events`, v1's `memory.oom_control`); a count that rose while the kernel ran means
  the OOM killer acted in its cgroup.
- A batch job's time limit: SLURM exports the job's end time (`SLURM_JOB_END_TIME`, Unix
  seconds); a kernel that died at or after it was ended by the scheduler.
- Otherwise the signal, where the dead kernel can still be read (a zombie's exit code), else
  nothing more than "killed (cause unknown)".
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Tests only: a file read instead of the cgroup's memory.events (a machine where no cgroup can
# be made with a small memory.max still tests the OOM path). Never set by users.
TEST_MEMORY_EVENTS_ENV = "JUPYTER_PROV4ML_TEST_MEMORY_EVENTS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A scheduler ends a job within about this long of its end time (SLURM's kill wait aside).
SLURM_SLACK_S = 60.0


def memory_events_path(
    pid: int, environ: Mapping[str, str] | None = None, root: Path = CGROUP_ROOT
) -> Path | None:
    """The file counting OOM kills in `pid`'s memory cgroup (None where there is none)."""
    environ = os.environ if environ is None else environ
    override = environ.get(TEST_MEMORY_EVENTS_ENV)
    if override:
        return Path(override)
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2 (unified)
            candidates += [
                root / relative / "memory.events",
                root / "unified" / relative / "memory.events",
            ]
        elif "memory" in controllers.split(","):  # cgroup v1
            candidates.append(root / "memory" / relative / "memory.oom_control")
    return next((path for path in candidates if path.is_file()), None)


def oom_kills(path: Path | None) -> int | None:
    """The `oom_kill` count of a memory.events / memory.oom_control file (None: unreadable)."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def exit_signal(pid: int) -> int | None:
    """The signal that ended `pid`, while it is a zombie its parent has not reaped yet
    (field 52 of /proc/<pid>/stat, Linux ≥ 3.5); None once reaped or where unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
        fields = text[text.rindex(b")") + 2 :].split()
        if fields[0] != b"Z":
            return None
        status = int(fields[49])
    except (OSError, ValueError, IndexError):
        return None
    return status & 0x7F or None


@dataclass(frozen=True, slots=True)
class CauseWatch:
    """What was read while the kernel lived, to compare with after it died."""

    pid: int
    events_path: Path | None
    oom_kills_before: int | None
    slurm_end_unix_s: float | None

    @classmethod
    def start(cls, pid: int, environ: Mapping[str, str] | None = None) -> CauseWatch:
        environ = os.environ if environ is None else environ
        path = memory_events_path(pid, environ)
        end: float | None
        try:
            end = float(environ["SLURM_JOB_END_TIME"])
        except (KeyError, ValueError):
            end = None
        return cls(pid, path, oom_kills(path), end)

    def cause(self, now_unix_s: float) -> str:
        """The cause of the kernel's death, in words."""
        after = oom_kills(self.events_path)
        if after is not None and after > (self.oom_kills_before or 0):
            return f"OOM kill (the cgroup's oom_kill count rose to {after})"
        if (
            self.slurm_end_unix_s is not None
            and now_unix_s >= self.slurm_end_unix_s - SLURM_SLACK_S
        ):
            return "job time limit (SLURM_JOB_END_TIME reached)"
        number = exit_signal(self.pid)
        if number is not None:
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            return f"killed by {name} (cause unknown)"
        return "killed (cause unknown)"
