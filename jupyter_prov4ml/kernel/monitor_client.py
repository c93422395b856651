"""The kernel's side of its monitor process (`kernel/monitor_process.py`).

One monitor per extension, started by the first `%%provrun` (starting it costs the cell one
`fork`+`exec`; the monitor's own imports run beside the cell) and stopped when the extension
unloads or the kernel exits. A run tells it when it starts and ends; when the run ends, the
monitor's samples fill the gaps of the kernel's own series (a C call that held the GIL, during
which the sampler thread could not run), so the run's samples cover its whole window.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.monitor_files import MonitorRow, read_samples, samples_path

STOP_WAIT_S = 2.0
# A kernel sample this far (in sampling intervals) from its neighbours leaves a gap that the
# monitor's samples fill.
GAP_INTERVALS = 1.5


class MonitorUnavailable(Exception):
    """The monitor cannot run here (no /proc, no fcntl, or the process failed to start)."""


class MonitorHandle:
    """The running monitor of one kernel session."""

    def __init__(self, process: subprocess.Popen[bytes], session_dir: Path) -> None:
        self.process = process
        self.session_dir = session_dir
        # A forked child of the kernel holds a copy of this handle: only the kernel drives it.
        self.owner_pid = os.getpid()

    @classmethod
    def start(cls, store: Store, session_id: str) -> MonitorHandle:
        if not sys.platform.startswith("linux") or not os.path.exists(f"/proc/{os.getpid()}/task"):
            raise MonitorUnavailable("it reads /proc (Linux only)")
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_prov4ml.kernel.monitor_process",
                    "--kernel-pid",
                    str(os.getpid()),
                    "--store",
                    str(store.root),
                    "--session",
                    session_id,
                    "--file-mode",
                    f"{store.modes.file:o}",
                    "--dir-mode",
                    f"{store.modes.directory:o}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                # The session's lock and the kernel's sockets stay the kernel's own.
                close_fds=True,
            )
        except OSError as error:
            raise MonitorUnavailable(str(error)) from error
        return cls(process, store.session_dir(session_id))

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def begin_run(self, run_id: str, interval_s: float, t0_monotonic_s: float) -> bool:
        """Sample this run until `end_run` (False: the monitor is gone)."""
        return self._say(f"run {run_id} {interval_s!r} {t0_monotonic_s!r}")

    def end_run(self, run_id: str, samples: SampleColumns, interval_s: float) -> SampleColumns:
        """Stop sampling the run; `samples` with the gaps filled from the monitor's samples
        (its file is read only when the kernel's series has a gap; the monitor removes it)."""
        self._say(f"end {run_id}")
        path = samples_path(self.session_dir, run_id)
        try:
            if has_gaps(samples, interval_s):
                samples = fill_gaps(samples, read_samples(path), interval_s)
        # A fault boundary: the kernel's own samples are the run's whatever fails here.
        except Exception:  # noqa: BLE001
            pass
        return samples

    def stop(self) -> None:
        """Ask it to end, then make sure it has (never raises)."""
        if os.getpid() != self.owner_pid:
            return  # a forked child exiting: the kernel's monitor is not its to stop
        self._say("stop")
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_WAIT_S)

    def _say(self, line: str) -> bool:
        stdin = self.process.stdin
        if stdin is None or stdin.closed or os.getpid() != self.owner_pid:
            return False
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError):
            return False
        return True


def _gap_s(samples: SampleColumns, interval_s: float) -> float:
    return GAP_INTERVALS * interval_s * samples.downsample_factor


def has_gaps(samples: SampleColumns, interval_s: float) -> bool:
    """Whether two neighbouring kernel samples lie farther apart than the sampling allows."""
    # From the sampler's start (0) on: a body that blocks at once leaves its gap first.
    elapsed = [0.0, *samples.column("elapsed_s")]
    limit = _gap_s(samples, interval_s)
    return any(b - a > limit for a, b in itertools.pairwise(elapsed))


def fill_gaps(samples: SampleColumns, rows: list[MonitorRow], interval_s: float) -> SampleColumns:
    """`samples` with the monitor's rows that fall where the kernel took none, in time order
    (a column one side lacks is NaN on the other's rows)."""
    elapsed = samples.column("elapsed_s")
    limit = _gap_s(samples, interval_s)
    if not elapsed:
        return samples
    extra = []
    for row in rows:
        at = row.columns.get("elapsed_s", math.nan)
        if not 0.0 < at < elapsed[-1]:
            continue
        index = bisect.bisect_left(elapsed, at)
        before = elapsed[index - 1] if index else 0.0
        if elapsed[index] - before > limit:
            extra.append(row.columns)
    if not extra:
        return samples
    order = sorted(
        [(at, 0, index) for index, at in enumerate(elapsed)]
        + [(columns["elapsed_s"], 1, index) for index, columns in enumerate(extra)]
    )
    names = list(samples.columns) + sorted({n for c in extra for n in c} - set(samples.columns))
    merged = SampleColumns(samples.capacity)
    merged.downsample_factor = samples.downsample_factor
    merged.columns = {
        name: [
            samples.column(name)[index] if source == 0 else extra[index].get(name, math.nan)
            for _, source, index in order
        ]
        for name in names
    }
    return merged
