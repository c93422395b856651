"""Progress of a running `%%provrun`: what a killed kernel leaves behind.

Every `CHECKPOINT_PERIOD_S` the sampler thread hands the store writer what is new since the
last checkpoint (samples, metric points, parameters logged through the API) as progress
slices; the writer journals each as one `progress` line (`store.codec` is their JSON form).
The user's code pays nothing: `log_metric` only appends to its arrays; this thread reads them.
A kernel killed mid-cell loses at most the last period (plus one sampling interval);
`recovery` folds the journaled slices back into a run with status `crashed`.

A slice holds at most `MAX_SLICE_POINTS` metric points, so no journal line is big enough to
block the writer's queue on a nearly full disk (a 300,000-point checkpoint is 15 slices).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from jupyter_prov4ml.capture.metrics import MetricLog, MetricSeries
from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.records import Param

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware.sampler import Tick

CHECKPOINT_PERIOD_S = 2.0
# About 0.7 MB of journal line at most (11 bytes a value, three columns a point).
MAX_SLICE_POINTS = 20_000


@dataclasses.dataclass(frozen=True, slots=True)
class MetricChunk:
    """Points of one metric series, in the order they were logged."""

    name: str
    context: str
    steps: array[int]
    values: array[float]
    times_ns: array[int]

    def __len__(self) -> int:
        return len(self.steps)


@dataclasses.dataclass(frozen=True, slots=True)
class ProgressSlice:
    """A piece of a running run's progress: one `progress` journal line."""

    run_id: str
    at_unix_s: float
    cpu_time_s: float
    samples: tuple[int, dict[str, array[float]]] | None = None  # (downsample factor, columns)
    metrics_t0_ns: int | None = None
    metrics: tuple[MetricChunk, ...] = ()
    params: tuple[Param, ...] = ()


class Checkpointer:
    """A sampler subscriber that hands the writer a run's progress every `period_s`."""

    def __init__(
        self,
        run_id: str,
        samples: Callable[[], SampleColumns],
        capture: RunCapture,
        sink: Callable[[ProgressSlice], None],
        started_cpu_ns: int,
        period_s: float = CHECKPOINT_PERIOD_S,
        max_slice_points: int = MAX_SLICE_POINTS,
    ) -> None:
        self.run_id = run_id
        self._started_cpu_ns = started_cpu_ns
        self.period_s = period_s
        self.max_slice_points = max_slice_points
        self._samples = samples
        self._capture = capture
        self._sink = sink
        self._due_s = period_s
        self._sampled_to_s = -math.inf
        self._metric_counts: dict[tuple[str, str], int] = {}
        self._param_count = 0
        self._first = True

    def on_tick(self, tick: Tick) -> None:
        if tick.elapsed_s >= self._due_s:
            self._due_s = tick.elapsed_s + self.period_s
            self.checkpoint()

    def checkpoint(self) -> None:
        """Hand the writer whatever is new since the last checkpoint (sampler thread)."""
        at = time.time()
        cpu_time_s = (time.process_time_ns() - self._started_cpu_ns) / 1e9
        samples = self._new_samples(self._samples())
        chunks = self._new_metrics(self._capture.metrics)
        params = tuple(self._capture.params[self._param_count :])
        self._param_count += len(params)
        t0 = self._capture.metrics.t0_ns if chunks or self._first else None
        self._first = False
        groups = _bounded_groups(chunks, self.max_slice_points) or [()]
        for number, group in enumerate(groups):
            first = number == 0
            self._sink(
                ProgressSlice(
                    self.run_id,
                    at,
                    cpu_time_s,
                    samples if first else None,
                    t0,
                    group,
                    params if first else (),
                )
            )

    def _new_samples(self, columns: SampleColumns) -> tuple[int, dict[str, array[float]]] | None:
        elapsed = columns.column("elapsed_s")
        start = bisect.bisect_right(elapsed, self._sampled_to_s)
        end = len(elapsed)
        if start >= end:
            return None
        self._sampled_to_s = elapsed[end - 1]
        return columns.downsample_factor, {
            name: array("d", values[start:end])
            for name, values in list(columns.columns.items())
            if len(values) >= end
        }

    def _new_metrics(self, log: MetricLog) -> list[MetricChunk]:
        chunks = []
        for key, series in list(log.series.items()):
            done = self._metric_counts.get(key, 0)
            # Appended values, then steps, then times: a point is whole once its time is in.
            count = len(series.times_ns)
            if count <= done:
                continue
            self._metric_counts[key] = count
            chunks.append(
                MetricChunk(
                    series.name,
                    series.context,
                    series.steps[done:count],
                    series.values[done:count],
                    series.times_ns[done:count],
                )
            )
        return chunks


def _bounded_groups(chunks: list[MetricChunk], limit: int) -> list[tuple[MetricChunk, ...]]:
    """The chunks cut and grouped so that no group holds more than `limit` points."""
    groups: list[tuple[MetricChunk, ...]] = []
    current: list[MetricChunk] = []
    room = limit
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            end = min(len(chunk), start + room)
            current.append(
                MetricChunk(
                    chunk.name,
                    chunk.context,
                    chunk.steps[start:end],
                    chunk.values[start:end],
                    chunk.times_ns[start:end],
                )
            )
            room -= end - start
            start = end
            if room == 0:
                groups.append(tuple(current))
                current, room = [], limit
    if current:
        groups.append(tuple(current))
    return groups


@dataclasses.dataclass(slots=True)
class Progress:
    """A run's journaled progress, put back together (see `recovery`)."""

    samples: SampleColumns = dataclasses.field(default_factory=SampleColumns)
    metrics: MetricLog | None = None
    params: list[Param] = dataclasses.field(default_factory=list)
    last_seen_unix_s: float | None = None
    cpu_time_s: float = 0.0

    def add(self, piece: ProgressSlice) -> None:
        """Fold one slice in; raises ValueError (having changed nothing) for one that does not
        fit what came before."""
        if self.metrics is None and piece.metrics_t0_ns is not None:
            self.metrics = MetricLog(piece.metrics_t0_ns)
        if piece.metrics and self.metrics is None:
            raise ValueError("metric points before the metrics clock origin")
        if piece.samples is not None:
            factor, columns = piece.samples
            self.samples.extend(columns, factor)
        for chunk in piece.metrics:
            assert self.metrics is not None
            key = (chunk.name, chunk.context)
            series = self.metrics.series.get(key)
            if series is None:
                series = self.metrics.series[key] = MetricSeries(chunk.name, chunk.context)
            series.steps.extend(chunk.steps)
            series.values.extend(chunk.values)
            series.times_ns.extend(chunk.times_ns)
        self.params += piece.params
        at = piece.at_unix_s
        self.last_seen_unix_s = max(at, self.last_seen_unix_s or at)
        self.cpu_time_s = max(self.cpu_time_s, piece.cpu_time_s)
