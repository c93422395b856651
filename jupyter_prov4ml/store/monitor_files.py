"""The monitor process's own files, under `sessions/<id>/monitor/`.

- `<run_id>.samples.jsonl`: the samples the monitor took while a `%%provrun` ran, one JSON line
  each (`t`: the monotonic clock, shared with the kernel's sampler; `u`: Unix time; `c`: the
  columns). Append-only; a line holds a fixed set of columns (bounded length), and a run keeps
  at most `MAX_SAMPLE_LINES` lines (the monitor halves its rate when full, as the kernel's
  sampler does). The kernel folds them into the run's samples when the run ends; recovery
  folds them into a crashed run.
- `death.json`: what the monitor saw when its kernel died (the last moment it was seen alive,
  the cause), read by whoever recovers the session.
- `lock`: held by the session's one monitor.

Everything here is read as untrusted input: a line or a note that does not parse is skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.files import atomic_write_bytes, make_private_dirs, open_store_file

MONITOR_DIR = "monitor"
DEATH_NOTE = "death.json"
LOCK_FILE = "lock"
# One hour at 10 Hz at full resolution, like the kernel's sampler buffer.
MAX_SAMPLE_LINES = 36_000
MAX_LINE_BYTES = 64 * 1024
MAX_NOTE_BYTES = 16 * 1024


def monitor_dir(session_dir: Path) -> Path:
    return session_dir / MONITOR_DIR


def samples_path(session_dir: Path, run_id: str) -> Path:
    return monitor_dir(session_dir) / f"{run_id}.samples.jsonl"


@dataclass(frozen=True, slots=True)
class MonitorRow:
    """One sample the monitor took."""

    monotonic_s: float
    unix_s: float
    columns: dict[str, float]


class SampleJournal:
    """Appends a run's samples to its file (the monitor's side)."""

    def __init__(self, path: Path, modes: StoreModes = PRIVATE) -> None:
        make_private_dirs(path.parent, modes)
        self._fd = open_store_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, modes)
        self.lines = 0
        self.stride = 1
        self._seen = 0

    def append(self, row: MonitorRow) -> None:
        """Write one sample (one `write`, so a reader sees whole lines or a torn last one)."""
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        columns = {k: (None if math.isnan(v) else round(v, 3)) for k, v in row.columns.items()}
        line = json.dumps(
            {"t": round(row.monotonic_s, 4), "u": round(row.unix_s, 3), "c": columns},
            separators=(",", ":"),
        )
        os.write(self._fd, line.encode() + b"\n")
        self.lines += 1
        if self.lines >= MAX_SAMPLE_LINES // self.stride:
            self.stride *= 2

    def close(self) -> None:
        os.close(self._fd)


def read_samples(path: Path) -> list[MonitorRow]:
    """The whole lines of a samples file, in order (a torn or foreign line is skipped)."""
    try:
        with path.open("rb") as handle:
            return list(_rows(handle))
    except OSError:
        return []


def _rows(lines: Iterator[bytes]) -> Iterator[MonitorRow]:
    for count, line in enumerate(lines):
        if count >= MAX_SAMPLE_LINES * 2 or not line.endswith(b"\n"):
            return
        if len(line) > MAX_LINE_BYTES:
            continue
        try:
            data = json.loads(line)
            columns = {
                str(name): math.nan if value is None else float(value)
                for name, value in data["c"].items()
            }
            yield MonitorRow(float(data["t"]), float(data["u"]), columns)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue


@dataclass(frozen=True, slots=True)
class DeathNote:
    """What the monitor saw of its kernel's death."""

    kernel_pid: int
    alive_at_unix_s: float  # the last moment the kernel was seen alive
    cause: str

    def write(self, session_dir: Path, modes: StoreModes = PRIVATE) -> None:
        make_private_dirs(monitor_dir(session_dir), modes)
        data: dict[str, object] = {
            "kernel_pid": self.kernel_pid,
            "alive_at_unix_s": self.alive_at_unix_s,
            "cause": self.cause,
        }
        atomic_write_bytes(monitor_dir(session_dir) / DEATH_NOTE, json.dumps(data).encode(), modes)


def read_death_note(session_dir: Path) -> DeathNote | None:
    try:
        with (monitor_dir(session_dir) / DEATH_NOTE).open("rb") as handle:
            data = json.loads(handle.read(MAX_NOTE_BYTES))
        cause = data["cause"]
        if not isinstance(cause, str):
            return None
        return DeathNote(int(data["kernel_pid"]), float(data["alive_at_unix_s"]), cause[:300])
    except (OSError, ValueError, TypeError, KeyError):
        return None
