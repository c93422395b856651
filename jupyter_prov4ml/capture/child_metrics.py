"""Metrics and parameters logged in child processes of a `%%provrun` (forked workers, spawned
ones, Python subprocesses), carried back to the run.

While a run's body runs, the kernel exports `JUPYTER_PROV4ML_SPOOL`, a folder under the run's
folder in the store. In a child, `log_metric`/`log_param` find no extension (a forked child
forgets the kernel's, see `forget_kernel_in_child`) and append one JSON line per call to their
own `<pid>.jsonl` there, unbuffered, so a worker killed mid-loop keeps what it logged. When the
run ends the kernel merges every file into the run's metric log, with the process (pid, and
`RANK`/`LOCAL_RANK` where set) on each point. The files are untrusted input: sizes, counts and
every field are bounded and checked, and a bad line is skipped and counted.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_prov4ml.capture.metrics import (
    MAX_NAME_CHARS,
    MetricError,
    MetricLog,
    metric_step,
    metric_value,
)
from jupyter_prov4ml.capture.params import make_param, param_text
from jupyter_prov4ml.records import Param

SPOOL_ENV = "JUPYTER_PROV4ML_SPOOL"
# Bounds on what a merge reads: a spool is written by user code we do not control.
MAX_SPOOL_FILES = 4096
MAX_FILE_BYTES = 256 * 2**20
MAX_LINE_BYTES = 64 * 2**10
MAX_SPOOL_POINTS = 20_000_000
MAX_SPOOL_PARAMS = 10_000
_FILE_NAME = re.compile(r"[1-9][0-9]{0,9}\.jsonl")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def process_rank(environ: Mapping[str, str], name: str) -> int | None:
    """`RANK` / `LOCAL_RANK` as set by torchrun, accelerate or Slurm wrappers; None if unset
    or not a small non-negative integer."""
    text = environ.get(name)
    if text is None or not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def own_origin() -> tuple[int, int, int]:
    """This process as a metric log records it: pid, rank, local rank (-1: not set)."""
    rank, local = process_rank(os.environ, "RANK"), process_rank(os.environ, "LOCAL_RANK")
    return os.getpid(), -1 if rank is None else rank, -1 if local is None else local


class ChildSpool:
    """A child process's append-only spool file (one per process, by pid)."""

    def __init__(self, directory: str, pid: int) -> None:
        self.pid = pid
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(os.path.join(directory, f"{pid}.jsonl"), flags, 0o600)
        # Points numbered 0, 1, … per series when no step is given, as in the kernel.
        self._counts: dict[tuple[str, str], int] = {}

    def metric(self, name: object, value: object, step: object, context: object) -> None:
        """Append one point; raises MetricError for what cannot be kept (nothing written)."""
        for label, text in (("name", name), ("context", context)):
            if not isinstance(text, str) or not text or len(text) > MAX_NAME_CHARS:
                raise MetricError(
                    f"a metric {label} must be a non-empty string of at most "
                    f"{MAX_NAME_CHARS} characters",
                    "name",
                )
        assert isinstance(name, str) and isinstance(context, str)
        number = metric_value(value)
        key = (name, context)
        index = self._counts.get(key, 0) if step is None else metric_step(step)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._write(
            {
                "kind": "metric",
                "name": name,
                "context": context,
                "value": number if math.isfinite(number) else repr(number),
                "step": index,
                "time_ns": time.perf_counter_ns(),
                **self._origin(),
            }
        )

    def param(self, name: object, value: object) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise ValueError("a parameter name must be a non-empty string")
        self._write({"kind": "param", "name": name, "value": param_text(value), **self._origin()})

    def _origin(self) -> dict[str, int | None]:
        return {
            "pid": self.pid,
            "rank": process_rank(os.environ, "RANK"),
            "local_rank": process_rank(os.environ, "LOCAL_RANK"),
        }

    def _write(self, entry: dict[str, object]) -> None:
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n"
        # One write per line on an O_APPEND file: a line is never interleaved or half-lost
        # unless the process dies inside the call.
        os.write(self._fd, line.encode("ascii"))


# One spool per (folder, process): a forked child must not write into its parent's file, so
# the pid is part of the key. A memo of `open`, not state of ours: nothing else reads it.
@functools.lru_cache(maxsize=8)
def _spool(directory: str, pid: int) -> ChildSpool:
    return ChildSpool(directory, pid)


def child_spool(environ: Mapping[str, str] | None = None) -> ChildSpool | None:
    """The spool of this process when it is a child of a running `%%provrun`, else None."""
    directory = (os.environ if environ is None else environ).get(SPOOL_ENV)
    if not directory:
        return None
    try:
        return _spool(directory, os.getpid())
    except OSError:
        return None


def forget_kernel_in_child() -> None:
    """Registered with `os.register_at_fork(after_in_child=...)`: a forked child holds a copy
    of the kernel's extension, whose records it would fill and then lose at exit; without it,
    the API writes to the run's spool instead."""
    module = sys.modules.get("IPython.core.interactiveshell")
    shell = module.InteractiveShell._instance if module is not None else None
    if shell is not None and getattr(shell, "_jupyter_prov4ml", None) is not None:
        shell._jupyter_prov4ml = None


# --- the kernel side: merging ------------------------------------------------------------------


@dataclass
class _Points:
    values: array[float] = field(default_factory=lambda: array("d"))
    steps: array[int] = field(default_factory=lambda: array("q"))
    times_ns: array[int] = field(default_factory=lambda: array("q"))
    pids: array[int] = field(default_factory=lambda: array("q"))
    ranks: array[int] = field(default_factory=lambda: array("q"))
    local_ranks: array[int] = field(default_factory=lambda: array("q"))


@dataclass(frozen=True, slots=True)
class SpoolMerge:
    """What a merge took from the spool, and what it skipped."""

    points: int = 0
    params: tuple[Param, ...] = ()
    processes: int = 0
    skipped_lines: int = 0
    skipped_files: int = 0

    def problems(self) -> str | None:
        """One line for the user when something was skipped."""
        if not (self.skipped_lines or self.skipped_files):
            return None
        return (
            f"child-process metrics: skipped {self.skipped_lines} malformed line(s) and "
            f"{self.skipped_files} unreadable or oversized file(s)"
        )


def merge_spool(directory: Path, metrics: MetricLog) -> SpoolMerge:
    """Add every point in the spool folder to `metrics`, and return the parameters found."""
    series: dict[tuple[str, str], _Points] = {}
    params: list[Param] = []
    skipped_lines = skipped_files = processes = total = 0
    for path in _spool_files(directory):
        if path is None:
            skipped_files += 1
            continue
        processes += 1
        lines = _bounded_lines(path)
        if lines is None:
            skipped_files += 1
            continue
        for line in lines:
            if line is None or total >= MAX_SPOOL_POINTS:
                skipped_lines += 1
                continue
            try:
                entry = json.loads(line)
                if entry.get("kind") == "param":
                    if len(params) < MAX_SPOOL_PARAMS:
                        params.append(_param(entry))
                    else:
                        skipped_lines += 1
                    continue
                _add_point(series, entry)
                total += 1
            except (ValueError, TypeError, KeyError, AttributeError, MetricError):
                skipped_lines += 1
    for (name, context), points in series.items():
        metrics.merge(name, context, points)
    return SpoolMerge(total, tuple(params), processes, skipped_lines, skipped_files)


def _spool_files(directory: Path) -> Iterator[Path | None]:
    """The spool's files (None for each entry that is not one we wrote), at most
    MAX_SPOOL_FILES of them."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return
    for count, entry in enumerate(entries):
        if count >= MAX_SPOOL_FILES:
            yield None
            continue
        ok = _FILE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
        yield Path(entry.path) if ok else None


def _bounded_lines(path: Path) -> list[bytes | None] | None:
    """The file's lines (None for one longer than MAX_LINE_BYTES), or None when the file
    cannot be read or is larger than MAX_FILE_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
                return None
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    # A last line without its newline was cut by a kill mid-write: it is skipped.
    lines: list[bytes | None] = []
    for line in data.split(b"\n")[:-1]:
        lines.append(line if len(line) <= MAX_LINE_BYTES else None)
    if not data.endswith(b"\n") and data:
        lines.append(None)
    return lines


def _int64(value: object) -> int:
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise TypeError("not a 64-bit integer")
    return value


def _rank(value: object) -> int:
    """A rank as stored: -1 for none."""
    if value is None:
        return -1
    if type(value) is not int or not 0 <= value < 10**9:
        raise TypeError("not a rank")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise TypeError("not a name")
    value.encode("utf-8")  # a lone surrogate (from a \\ud800 escape) raises ValueError
    return value


def _add_point(series: dict[tuple[str, str], _Points], entry: Mapping[str, object]) -> None:
    if entry["kind"] != "metric":
        raise ValueError("unknown entry")
    name, context = _text(entry["name"]), _text(entry["context"])
    raw = entry["value"]
    if isinstance(raw, str):
        value = _NON_FINITE[raw]
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise TypeError("not a value")
    step, time_ns = _int64(entry["step"]), _int64(entry["time_ns"])
    pid = _int64(entry["pid"])
    rank, local_rank = _rank(entry.get("rank")), _rank(entry.get("local_rank"))
    points = series.get((name, context))
    if points is None:
        points = series[(name, context)] = _Points()
    points.values.append(value)
    points.steps.append(step)
    points.times_ns.append(time_ns)
    points.pids.append(pid)
    points.ranks.append(rank)
    points.local_ranks.append(local_rank)


def _param(entry: Mapping[str, object]) -> Param:
    name, value = _text(entry["name"]), entry["value"]
    if not (value is None or isinstance(value, str | int | float | bool)):
        raise TypeError("not a parameter value")
    if isinstance(value, str):
        value.encode("utf-8")
    pid = _int64(entry["pid"])
    rank = _rank(entry.get("rank"))
    origin = f"process {pid}" + (f", rank {rank}" if rank >= 0 else "")
    return make_param(name, value, f"api ({origin})")
