"""Progress checkpoints of a running `%%provrun`: what a killed kernel leaves behind.

Every `CHECKPOINT_PERIOD_S` the sampler thread hands the store writer what is new since the
last checkpoint (samples, metric points, parameters logged through the API), and the writer
appends it to the journal as one `progress` line and flushes. The user's code pays nothing:
`log_metric` only appends to its arrays; this thread reads them. A kernel killed mid-cell
loses at most the last period (plus one sampling interval) of these; `recovery` turns the
journaled pieces back into a run with status `crashed`.

Columns travel as base64 of little-endian 64-bit arrays: lossless for NaN and infinities,
about 11 bytes a value, and cheap to encode in a thread that shares the GIL with training.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import math
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.capture.metrics import MetricLog, MetricSeries
from jupyter_prov4ml.hardware.sampler import SampleColumns

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware.sampler import Tick
    from jupyter_prov4ml.records import Param

CHECKPOINT_PERIOD_S = 2.0
_BIG_ENDIAN = sys.byteorder == "big"


def pack(values: Sequence[float] | Sequence[int], typecode: str) -> str:
    """64-bit values (typecode `d` or `q`) as base64 of their little-endian bytes."""
    packed = values if isinstance(values, array) else array(typecode, values)
    if _BIG_ENDIAN:
        packed = array(typecode, packed)
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def unpack(text: str, typecode: str) -> array[Any]:
    """The inverse of `pack`; raises ValueError for text that is not such a column."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 8:
        raise ValueError("a packed column is a whole number of 8-byte values")
    values = array(typecode)
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


class Checkpointer:
    """A sampler subscriber that journals a run's progress every `period_s`."""

    def __init__(
        self,
        run_id: str,
        samples: Callable[[], SampleColumns],
        capture: RunCapture,
        sink: Callable[[dict[str, Any]], None],
        started_cpu_ns: int,
        period_s: float = CHECKPOINT_PERIOD_S,
    ) -> None:
        self.run_id = run_id
        self._started_cpu_ns = started_cpu_ns
        self.period_s = period_s
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
        payload: dict[str, Any] = {
            "run_id": self.run_id,
            "at_unix_s": time.time(),
            "cpu_time_s": (time.process_time_ns() - self._started_cpu_ns) / 1e9,
        }
        samples = self._new_samples(self._samples())
        if samples:
            payload["samples"] = samples
        metrics = self._new_metrics(self._capture.metrics)
        if metrics or self._first:
            payload["metrics_t0_ns"] = self._capture.metrics.t0_ns
        if metrics:
            payload["metrics"] = metrics
        params = self._capture.params[self._param_count :]
        if params:
            self._param_count += len(params)
            payload["params"] = [dataclasses.asdict(param) for param in params]
        self._first = False
        self._sink(payload)

    def _new_samples(self, columns: SampleColumns) -> dict[str, Any] | None:
        elapsed = columns.column("elapsed_s")
        start = bisect.bisect_right(elapsed, self._sampled_to_s)
        end = len(elapsed)
        if start >= end:
            return None
        self._sampled_to_s = elapsed[end - 1]
        return {
            "downsample_factor": columns.downsample_factor,
            "columns": {
                name: pack(values[start:end], "d")
                for name, values in list(columns.columns.items())
                if len(values) >= end
            },
        }

    def _new_metrics(self, log: MetricLog) -> list[dict[str, Any]]:
        chunks = []
        for key, series in list(log.series.items()):
            done = self._metric_counts.get(key, 0)
            # Appended values, then steps, then times: a point is whole once its time is in.
            count = len(series.times_ns)
            if count <= done:
                continue
            self._metric_counts[key] = count
            chunks.append(
                {
                    "name": series.name,
                    "context": series.context,
                    "step": pack(series.steps[done:count], "q"),
                    "value": pack(series.values[done:count], "d"),
                    "time_ns": pack(series.times_ns[done:count], "q"),
                }
            )
        return chunks


@dataclasses.dataclass(slots=True)
class Progress:
    """A run's journaled progress, put back together (see `recovery`)."""

    samples: SampleColumns = dataclasses.field(default_factory=SampleColumns)
    metrics: MetricLog | None = None
    params: list[Param] = dataclasses.field(default_factory=list)
    last_seen_unix_s: float | None = None
    cpu_time_s: float = 0.0

    def add(self, entry: Mapping[str, Any]) -> None:
        """Fold one `progress` line in; raises (KeyError, TypeError, ValueError) on a bad one,
        having changed nothing."""
        from jupyter_prov4ml.records import Param

        at = float(entry["at_unix_s"])
        samples = _decoded_samples(entry.get("samples"))
        metrics = [_decoded_metric(chunk) for chunk in entry.get("metrics", ())]
        params = [Param(**param) for param in entry.get("params", ())]
        if self.metrics is None and "metrics_t0_ns" in entry:
            self.metrics = MetricLog(int(entry["metrics_t0_ns"]))
        if metrics and self.metrics is None:
            raise ValueError("metric points before the metrics clock origin")
        if samples is not None:
            factor, columns = samples
            self.samples.extend(columns, factor)
        for name, context, steps, values, times in metrics:
            assert self.metrics is not None
            series = self.metrics.series.get((name, context))
            if series is None:
                series = self.metrics.series[(name, context)] = MetricSeries(name, context)
            series.steps.extend(steps)
            series.values.extend(values)
            series.times_ns.extend(times)
        self.params += params
        self.last_seen_unix_s = max(at, self.last_seen_unix_s or at)
        self.cpu_time_s = max(self.cpu_time_s, float(entry.get("cpu_time_s", 0.0)))


def _decoded_samples(chunk: Any) -> tuple[int, dict[str, array[Any]]] | None:
    if chunk is None:
        return None
    columns = {str(name): unpack(text, "d") for name, text in chunk["columns"].items()}
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1 or "elapsed_s" not in columns:
        raise ValueError("sample columns of a checkpoint differ in length")
    return int(chunk["downsample_factor"]), columns


def _decoded_metric(
    chunk: Mapping[str, Any],
) -> tuple[str, str, array[Any], array[Any], array[Any]]:
    name, context = chunk["name"], chunk["context"]
    if not isinstance(name, str) or not isinstance(context, str):
        raise TypeError("a metric name and context are strings")
    steps, values = unpack(chunk["step"], "q"), unpack(chunk["value"], "d")
    times = unpack(chunk["time_ns"], "q")
    if not len(steps) == len(values) == len(times):
        raise ValueError("metric columns of a checkpoint differ in length")
    return name, context, steps, values, times
