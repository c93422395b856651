"""Metrics logged by the user's code: columnar buffers on the hot path, a compact lossless
Parquet file and per-metric summaries at save time.

A point costs three typed-array appends (~0.2 µs): values are float64, steps int64 and times
int64 nanoseconds, kept in `array.array`s that pyarrow reads without copying.
"""

from __future__ import annotations

import operator
import time
from array import array
from typing import Protocol

MAX_NAME_CHARS = 200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class MetricError(ValueError):
    """A metric we cannot store: the message is the one line the user sees; `problem` (value,
    step or name) groups repeats, so a loop of bad points gives one line, not thousands."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


_TEXT = (str, bytes, bytearray)


def metric_value(value: object) -> float:
    """A float64 from Python numbers, numpy scalars/0-d arrays, or framework scalars (a
    one-element torch or jax tensor) — through `__float__`, so no framework is imported."""
    if isinstance(value, float):  # numpy.float64 is a float subclass
        return float(value)
    if isinstance(value, _TEXT) or value is None:
        raise MetricError(f"a metric value must be a number, not {type(value).__name__}", "value")
    # float() of a numpy complex drops the imaginary part (with a ComplexWarning): refuse it.
    # (Python ints, the common case here, skip the attribute lookup.)
    if not isinstance(value, int) and (
        isinstance(value, complex) or getattr(getattr(value, "dtype", None), "kind", None) == "c"
    ):
        raise MetricError(
            f"a metric value must be a real number, not {type(value).__name__}", "value"
        )
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as error:
        raise MetricError(
            f"cannot store {type(value).__name__} as a number ({error})", "value"
        ) from None


def metric_step(step: object) -> int:
    """An int64 step from ints, numpy integers or integral floats."""
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    try:
        index = operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        raise MetricError(f"a step must be an integer, not {type(step).__name__}", "step") from None
    if not _INT64_MIN <= index <= _INT64_MAX:
        raise MetricError(f"step {index} does not fit in 64 bits", "step")
    return index


class MetricSeries:
    """The points of one (name, context) series.

    `pids`, `ranks` and `local_ranks` (-1: not set) say which process logged each point, once
    points from child processes were merged in; None while every point is the log's own
    (the kernel's), so the hot path appends to three arrays only.
    """

    __slots__ = ("context", "local_ranks", "name", "pids", "ranks", "steps", "times_ns", "values")

    def __init__(self, name: str, context: str) -> None:
        self.name = name
        self.context = context
        self.values = array("d")
        self.steps = array("q")
        self.times_ns = array("q")
        self.pids: array[int] | None = None
        self.ranks: array[int] | None = None
        self.local_ranks: array[int] | None = None

    def __len__(self) -> int:
        return len(self.values)


class PointColumns(Protocol):
    """Points of one series from other processes, column-wise (ranks -1 where not set)."""

    values: array[float]
    steps: array[int]
    times_ns: array[int]
    pids: array[int]
    ranks: array[int]
    local_ranks: array[int]


class MetricLog:
    """All metric series of one run."""

    def __init__(
        self, t0_ns: int | None = None, origin: tuple[int | None, int, int] = (None, -1, -1)
    ) -> None:
        self.t0_ns = time.perf_counter_ns() if t0_ns is None else t0_ns
        # The process logging into this log directly (pid, rank, local rank; -1: not set):
        # the kernel's. Unknown (None) for a log rebuilt from a dead kernel's journal.
        self.origin = origin
        self.series: dict[tuple[str, str], MetricSeries] = {}
        # A loop logs the same metric again and again: remember the last one by identity.
        self._last_name: object = None
        self._last_context: object = None
        self._last_series: MetricSeries | None = None

    def __len__(self) -> int:
        return sum(len(series) for series in self.series.values())

    def log(self, name: str, value: object, step: object, context: str) -> None:
        """Append one point; raises MetricError (and stores nothing) for what cannot be kept."""
        series = self._last_series
        if series is None or name is not self._last_name or context is not self._last_context:
            found = self.series.get((name, context))
            series = found if found is not None else self._new_series(name, context)
            self._last_name, self._last_context, self._last_series = name, context, series
        number = value if type(value) is float else metric_value(value)
        if step is None:
            index = len(series.values)
        elif type(step) is int and _INT64_MIN <= step <= _INT64_MAX:
            index = step
        else:
            index = metric_step(step)
        series.values.append(number)  # type: ignore[arg-type]
        series.steps.append(index)
        series.times_ns.append(time.perf_counter_ns())

    def _new_series(self, name: object, context: object) -> MetricSeries:
        for label, text in (("name", name), ("context", context)):
            if not isinstance(text, str) or not str.__len__(text):
                raise MetricError(
                    f"a metric {label} must be a non-empty string, got {text!r:.60}", "name"
                )
            if str.__len__(text) > MAX_NAME_CHARS:
                raise MetricError(
                    f"a metric {label} is limited to {MAX_NAME_CHARS} characters", "name"
                )
            if not text.isascii() and not _is_utf8(text):
                raise MetricError(
                    f"a metric {label} must be valid Unicode text (it holds a lone surrogate)",
                    "name",
                )
        assert isinstance(name, str) and isinstance(context, str)
        series = self.series[(name, context)] = MetricSeries(name, context)
        return series

    def merge(self, name: str, context: str, points: PointColumns) -> None:
        """Add points logged by other processes (at a run's end, on the main thread), keeping
        the series in time order (one monotonic clock serves every process of the host)."""
        series = self.series.get((name, context))
        if series is None:
            series = self.series[(name, context)] = MetricSeries(name, context)
        own = len(series.values)
        pid, rank, local_rank = self.origin
        pids = _filled(series.pids, -1 if pid is None else pid, own) + points.pids
        ranks = _filled(series.ranks, rank, own) + points.ranks
        local = _filled(series.local_ranks, local_rank, own) + points.local_ranks
        values = series.values + points.values
        steps = series.steps + points.steps
        times = series.times_ns + points.times_ns
        order = sorted(range(len(times)), key=times.__getitem__)
        series.values = array("d", [values[i] for i in order])
        series.steps = array("q", [steps[i] for i in order])
        series.times_ns = array("q", [times[i] for i in order])
        series.pids = array("q", [pids[i] for i in order])
        series.ranks = array("q", [ranks[i] for i in order])
        series.local_ranks = array("q", [local[i] for i in order])
        if series is self._last_series:
            self._last_series = None

    def latest(self) -> list[tuple[str, str, float, list[float]]]:
        """(name, context, last value, recent values) per series, for the live view.

        Safe from another thread: it only reads lengths and items of append-only arrays.
        """
        out = []
        for series in list(self.series.values()):
            count = len(series.values)
            if count:
                recent = list(series.values[max(0, count - 40) : count])
                out.append((series.name, series.context, recent[-1], recent))
        return out

    def points_between(self, start_ns: int, end_ns: int) -> dict[str, float]:
        """The last value of each series logged in [start_ns, end_ns), keyed name/context."""
        import bisect

        found = {}
        for series in self.series.values():
            position = bisect.bisect_left(series.times_ns, end_ns) - 1
            if position >= 0 and series.times_ns[position] >= start_ns:
                found[f"{series.name}/{series.context}"] = series.values[position]
        return found


def _filled(column: array[int] | None, value: int, count: int) -> array[int]:
    """A process column as stored, or `count` times `value` where there is none yet."""
    return array("q", column) if column is not None else array("q", [value]) * count


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
