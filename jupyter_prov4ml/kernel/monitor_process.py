"""The monitor: a small process outside the kernel that samples it and sees it die.

Started by the kernel's first `%%provrun` (`kernel/monitor_client.py`) as
`python -m jupyter_prov4ml.kernel.monitor_process`, it reads the kernel's process tree and the
host from /proc, from outside, so it keeps sampling while the kernel's threads cannot run (a C
call holding the GIL). While a run is open it appends its samples to the run's file under
`sessions/<id>/monitor/` (`store/monitor_files.py`). When the kernel dies it writes what it saw
(the last moment the kernel was alive, the cause) and finalises the session's open runs as
`crashed` at once, through `store.recovery`, taking the dead session's lock as any recoverer
does. It never outlives its kernel: it watches it (a pidfd, else its parent pid) and exits
when it is gone, or when the kernel closes its end of the command pipe.

Commands, one per line on stdin: `run <run_id> <interval_s> <t0_monotonic_s>`, `end <run_id>`,
`stop`. GPUs are not read here (the kernel's sampler reads them): NVML would triple this
process's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import selectors
import signal
import sys
import time
from pathlib import Path

from jupyter_prov4ml.hardware.crash_cause import CauseWatch
from jupyter_prov4ml.hardware.host import ProcHostReader
from jupyter_prov4ml.hardware.process_tree import TreeSampler, is_process_column, open_tree_reader
from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.settings import StoreModes
from jupyter_prov4ml.store.monitor_files import (
    LOCK_FILE,
    DeathNote,
    MonitorRow,
    SampleJournal,
    monitor_dir,
    samples_path,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the kernel never starts a monitor there
    fcntl = None  # type: ignore[assignment]

# Without a pidfd, how often an idle monitor looks whether its kernel still lives.
IDLE_POLL_S = 0.5
# How long the monitor tries to take a dead kernel's session lock (a forked child of the
# kernel may still hold it) before leaving recovery to the next `list` or `%load_ext`.
RECOVER_WAIT_S = 30.0
MIN_INTERVAL_S = 0.01


class Monitor:
    def __init__(self, kernel_pid: int, store_root: Path, session_id: str, modes: StoreModes):
        self.kernel_pid = kernel_pid
        self.store_root = store_root
        self.session_id = session_id
        self.session_dir = store_root / "sessions" / session_id
        self.modes = modes
        self.watch = CauseWatch.start(kernel_pid)
        self.tree = TreeSampler(open_tree_reader(kernel_pid))
        self.host = ProcHostReader()
        self.run_id: str | None = None
        self.journal: SampleJournal | None = None
        self.interval_s = 0.1
        self.t0 = 0.0
        self.deadline = math.inf
        self.alive_at = time.time()
        self._pending = b""
        # Files of runs that ended: the kernel reads one when its run ends, then it goes.
        self._ended: list[Path] = []

    def alive(self) -> bool:
        if os.getppid() != self.kernel_pid:
            return False  # re-parented: the kernel is gone (a zombie reads as gone too)
        self.alive_at = time.time()
        return True

    def serve(self, commands: int) -> None:
        """Until the kernel stops us or dies."""
        selector = selectors.DefaultSelector()
        selector.register(commands, selectors.EVENT_READ, "commands")
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self.kernel_pid)  # readable the moment the kernel exits
            selector.register(pidfd, selectors.EVENT_READ, "kernel")
        while True:
            now = time.monotonic()
            if self.journal is not None:
                timeout: float | None = max(0.0, self.deadline - now)
            else:
                timeout = None if pidfd is not None else IDLE_POLL_S
            events = selector.select(timeout)
            if any(key.data == "kernel" for key, _ in events) or not self.alive():
                self.died()
                return
            for key, _ in events:
                said = self._read_commands(commands) if key.data == "commands" else None
                if said == "eof":
                    # The kernel closes its fds before it is reaped or re-parents us: it is
                    # dying (only `stop` stops us). Watch on until it is gone.
                    selector.unregister(commands)
                elif said == "stop":
                    self.end_run()  # stopped by the kernel
                    self.clean()
                    return
            if self.journal is not None and time.monotonic() >= self.deadline:
                self.tick()

    def _read_commands(self, fd: int) -> str | None:
        """Act on the commands read; "stop" or "eof" when the monitor is to end."""
        data = os.read(fd, 4096)
        if not data:
            return "eof"
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            words = line.decode("ascii", "replace").split()
            if words[:1] == ["stop"]:
                return "stop"
            if words[:1] == ["run"] and len(words) == 4:
                self.begin_run(words[1], float(words[2]), float(words[3]))
            elif words[:1] == ["end"]:
                self.end_run()
        return None

    def begin_run(self, run_id: str, interval_s: float, t0: float) -> None:
        self.end_run()
        self.clean()
        if not valid_id(run_id):
            return
        self.run_id = run_id
        self.interval_s = max(MIN_INTERVAL_S, interval_s)
        self.t0 = t0
        self.journal = SampleJournal(samples_path(self.session_dir, run_id), self.modes)
        self.tree.prime()
        self.host.prime()
        self.deadline = time.monotonic() + self.interval_s

    def end_run(self) -> None:
        if self.journal is not None:
            self.journal.close()
            if self.run_id is not None:
                self._ended.append(samples_path(self.session_dir, self.run_id))
        self.journal = None
        self.run_id = None

    def clean(self) -> None:
        for path in self._ended:
            with contextlib.suppress(OSError):
                path.unlink()
        self._ended.clear()

    def tick(self) -> None:
        assert self.journal is not None
        now = time.monotonic()
        # Absolute deadlines (no drift); an overrun moves on instead of bursting.
        self.deadline = max(self.deadline + self.interval_s * self.journal.stride, now)
        try:
            tree = self.tree.tick()
            host = self.host.read(now - self.t0)
        except OSError:
            return  # the kernel is exiting: the next look at it says so
        columns = {"elapsed_s": now - self.t0}
        columns.update(tree.columns())
        root = next((p for p in tree.processes if p[0] == self.kernel_pid), None)
        # The host reader's process figures are this monitor's own: the kernel's are the root's.
        columns["process_cpu_percent"] = root[1] if root is not None else math.nan
        columns["process_rss_bytes"] = float(tree.reading.root.rss_bytes)
        columns["system_cpu_percent"] = host.system_cpu_percent
        columns["system_memory_used_bytes"] = float(host.system_memory_used_bytes)
        # Per-process series stay the kernel sampler's: a line holds a fixed set of columns.
        columns = {k: v for k, v in columns.items() if not is_process_column(k)}
        self.journal.append(MonitorRow(now, time.time(), columns))

    def died(self) -> None:
        """Write what was seen, then finalise the dead session's open runs."""
        crashed = self.run_id
        self.end_run()
        if crashed is not None:
            self._ended.pop()  # recovery reads it
        note = DeathNote(self.kernel_pid, self.alive_at, self.watch.cause(time.time()))
        try:
            note.write(self.session_dir, self.modes)
        except OSError as error:
            print(f"jupyter_prov4ml monitor: could not write {error!r}", file=sys.stderr)
        self.clean()
        if self.recover() and crashed is not None:
            self._ended.append(samples_path(self.session_dir, crashed))
            self.clean()  # folded into the crashed run's data files

    def recover(self) -> bool:
        """Finalise the session's open runs (False: left to the next recoverer)."""
        from jupyter_prov4ml.notices import Notices
        from jupyter_prov4ml.store.layout import Store
        from jupyter_prov4ml.store.recovery import recover_session
        from jupyter_prov4ml.store.session_lock import LOCK_NAME, SessionLock

        deadline = time.monotonic() + RECOVER_WAIT_S
        while (self.session_dir / LOCK_NAME).exists() and time.monotonic() < deadline:
            lock = SessionLock.take_if_dead(self.session_dir)
            if lock is None:
                time.sleep(0.1)  # a forked child of the kernel still holds it
                continue
            try:
                recover_session(Store(self.store_root, self.modes), self.session_id, Notices())
            finally:
                lock.release(remove=True)
            return True
        return False


def _hold_lock(folder: Path, modes: StoreModes) -> int | None:
    """This session's monitor lock (None: another monitor holds it)."""
    from jupyter_prov4ml.store.files import make_private_dirs, open_store_file

    make_private_dirs(folder, modes)
    fd = open_store_file(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, modes)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter_prov4ml.kernel.monitor_process")
    parser.add_argument("--kernel-pid", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--file-mode", type=lambda v: int(v, 8), default=0o600)
    parser.add_argument("--dir-mode", type=lambda v: int(v, 8), default=0o700)
    args = parser.parse_args(argv)
    # The front end's interrupt and a batch scheduler's SIGTERM reach the kernel's whole
    # process group: the monitor outlives them long enough to see the kernel end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    modes = StoreModes(args.dir_mode, args.file_mode)
    monitor = Monitor(args.kernel_pid, args.store, args.session, modes)
    if not monitor.alive():
        return 0
    lock = _hold_lock(monitor_dir(monitor.session_dir), modes)
    if lock is None:
        return 0  # never twice for one session
    monitor.serve(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
