"""A run's series (metrics, hardware samples, loop steps) as compact, lossless Parquet files,
and their readers: the one module that imports `pyarrow`, lazily, from the store writer
thread or a reader (CLI, `read_metrics`).

Metrics: float64 values, int64 steps and µs times, kept in `array.array`s that pyarrow wraps
without copying; samples: float64 columns; steps: one row per loop step.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.records import MetricSummary

if TYPE_CHECKING:
    from array import array

    from jupyter_prov4ml.capture.loops import RawStep
    from jupyter_prov4ml.capture.metrics import MetricLog, MetricSeries
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.hardware.sampler import SampleColumns

METRICS_ROLE = "metrics"
# The most rows a reader turns into Python values (about 1 GB of them for a metrics file).
MAX_READ_ROWS = 20_000_000
SAMPLES_ROLE = "hardware_samples"
STEPS_ROLE = "steps"
DASK_TASKS_ROLE = "dask_tasks"


def table_bytes(table: Any, **options: Any) -> bytes:
    """A pyarrow table as the bytes of a zstd-compressed Parquet file (every data file of a
    run is written this way; `options` go to `pyarrow.parquet.write_table`)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", **options)
    return sink.getvalue()


def parquet_bytes(columns: Mapping[str, Sequence[float]]) -> bytes:
    """Encode equal-length float columns as a Parquet file."""
    import pyarrow as pa

    return table_bytes(
        pa.table({name: pa.array(values, type=pa.float64()) for name, values in columns.items()})
    )


def read_parquet(path: Path) -> dict[str, list[float]]:
    """Read a file written by `parquet_bytes` back into plain lists."""
    table = _bounded_table(path)
    return {name: table.column(name).to_pylist() for name in table.column_names}


def encode_run_series(series: RunSeries) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The run's data files as (role, bytes), and the record fields encoding filled in (the
    metric summaries, computed from the same arrays)."""
    files: list[tuple[str, bytes]] = []
    fields: dict[str, Any] = {}
    if series.samples is not None and len(series.samples):
        files.append((SAMPLES_ROLE, encode_samples(series.samples)))
    if series.metrics is not None:
        data, summaries = encode_metrics(series.metrics)
        if data:
            files.append((METRICS_ROLE, data))
            fields["metrics"] = summaries
    if series.steps:
        files.append((STEPS_ROLE, encode_steps(series.steps, series.watts_per_core)))
    if series.dask_tasks:
        files.append((DASK_TASKS_ROLE, encode_dask_tasks(series.dask_tasks)))
    return files, fields


def warm_up_series_files() -> None:
    """Encode a one-point run (metrics, samples, steps) and throw it away: whatever pyarrow
    imports lazily on that path (pandas, when installed) is imported now."""
    from jupyter_prov4ml.capture.loops import RawStep
    from jupyter_prov4ml.capture.metrics import MetricLog
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.hardware.sampler import SampleColumns

    metrics = MetricLog(0)
    metrics.log("warm-up", 0.0, 0, "training")
    samples = SampleColumns()
    samples.extend({"elapsed_s": [0.0]}, 1)
    step = RawStep("warm-up", 0, 0.0, 0, 1, 0.0, (), True)
    encode_run_series(RunSeries(metrics, samples, (step,)))
    import pyarrow.parquet as pq

    pq.read_table(io.BytesIO(encode_samples(samples)))


def encode_samples(samples: SampleColumns) -> bytes:
    """A run's hardware sample columns."""
    return parquet_bytes(samples.columns)


_DICTIONARY_COLUMNS = ["name", "context"]
# Steps and times grow steadily: delta encoding stores them in a few bits each. Splitting the
# bytes of each float lets zstd find the patterns in slowly changing loss curves.
_ENCODINGS = {
    "step": "DELTA_BINARY_PACKED",
    "time_us": "DELTA_BINARY_PACKED",
    "value": "BYTE_STREAM_SPLIT",
}


def encode_metrics(log: MetricLog) -> tuple[bytes, tuple[MetricSummary, ...]]:
    """The metrics file of a run (empty: no points) and each series' summary."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = []
    summaries = []
    for series in log.series.values():
        count = len(series)
        if not count:
            continue
        values = _wrap(pa.float64(), series.values, count)
        steps = _wrap(pa.int64(), series.steps, count)
        times = _wrap(pa.int64(), series.times_ns, count)
        codes = _zeros(count)
        tables.append(
            pa.table(
                {
                    "name": pa.DictionaryArray.from_arrays(codes, pa.array([series.name])),
                    "context": pa.DictionaryArray.from_arrays(codes, pa.array([series.context])),
                    "step": steps,
                    "value": values,
                    "time_us": pc.divide(pc.subtract(times, log.t0_ns), 1000),
                    **_process_columns(series, log.origin, count),
                }
            )
        )
        summaries.append(_summary(series, values, steps, pc))
    if not tables:
        return b"", ()
    table = pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()
    data = table_bytes(table, use_dictionary=_DICTIONARY_COLUMNS, column_encoding=_ENCODINGS)
    return data, tuple(summaries)


_PROCESS_COLUMNS = ("pid", "rank", "local_rank")


def _process_columns(
    series: MetricSeries, origin: tuple[int | None, int, int], count: int
) -> dict[str, Any]:
    """Which process logged each point (null where unknown or, for ranks, not set): the log's
    own process for every point until child processes' points were merged in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stored = (series.pids, series.ranks, series.local_ranks)
    columns = {}
    for name, column, own in zip(_PROCESS_COLUMNS, stored, origin, strict=True):
        if column is None:
            value = None if own is None or own < 0 else own
            columns[name] = pa.repeat(pa.scalar(value, pa.int64()), count)
        else:
            raw = _wrap(pa.int64(), column, count)
            columns[name] = pc.if_else(pc.less(raw, 0), pa.scalar(None, pa.int64()), raw)
    return columns


def _wrap(kind: Any, buffer: array[Any], count: int) -> Any:
    import pyarrow as pa

    # Zero-copy: the array's memory becomes the Arrow buffer.
    return pa.Array.from_buffers(kind, count, [None, pa.py_buffer(buffer)])


def _zeros(count: int) -> Any:
    """`count` dictionary codes all pointing at the one name (a series is one name)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(bytes(4 * count))])


def _summary(series: MetricSeries, values: Any, steps: Any, pc: Any) -> MetricSummary:
    """count/first/last/min/max and the steps where min and max were reached (NaN ignored
    for min/max; they are kept in the file as logged)."""
    finite = pc.drop_null(pc.if_else(pc.is_nan(values), None, values))
    first, last = series.values[0], series.values[-1]
    if len(finite):
        extremes = pc.min_max(finite)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        step_of_min = steps[pc.index(values, low).as_py()].as_py()
        step_of_max = steps[pc.index(values, high).as_py()].as_py()
    else:
        low = high = math.nan
        step_of_min = step_of_max = series.steps[0]
    return MetricSummary(
        series.name, series.context, len(series), first, last, low, high, step_of_min, step_of_max
    )


def encode_steps(steps: Sequence[RawStep], watts_per_core: float) -> bytes:
    """Every loop step of a run (empty: none): times, CPU and its estimated energy."""
    if not steps:
        return b""
    import pyarrow as pa

    table = pa.table(
        {
            "loop": pa.array([s.loop for s in steps]).dictionary_encode(),
            "index": pa.array([s.index for s in steps], pa.int64()),
            "started_at_unix_s": pa.array([s.started_unix_s for s in steps], pa.float64()),
            "wall_time_s": pa.array(
                [(s.ended_ns - s.started_ns) / 1e9 for s in steps], pa.float64()
            ),
            "cpu_time_s": pa.array([s.cpu_time_s for s in steps], pa.float64()),
            "cpu_energy_j_estimated": pa.array(
                [max(0.0, s.cpu_time_s) * watts_per_core for s in steps], pa.float64()
            ),
            "completed": pa.array([s.completed for s in steps], pa.bool_()),
        }
    )
    return table_bytes(table)


def encode_dask_tasks(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """A run's Dask tasks, one row each: key, task group, worker, compute window, bytes, status
    (text columns dictionary-encoded: a few groups and workers repeat over many rows). Keys
    are the user's (`submit(..., key=...)`): redacted here, on the writer's thread."""
    import pyarrow as pa

    from jupyter_prov4ml.redaction import redact_text

    columns = {**columns, "key": [redact_text(str(key)) for key in columns.get("key", ())]}

    table = pa.table(
        {
            name: (
                pa.array(values, pa.string()).dictionary_encode()
                if name in ("group", "worker", "status")
                else pa.array(values, pa.string())
                if name == "key"
                else pa.array(values, pa.int64())
                if name == "nbytes"
                else pa.array(values, pa.float64())
            )
            for name, values in columns.items()
        }
    )
    return table_bytes(table)


class MetricsFileError(ValueError):
    """A metrics file that cannot be read back: damaged, or not one this package wrote."""


def read_metrics_file(path: Any) -> dict[str, list[Any]]:
    """A metrics file as plain columns: name, context, step, value, time_s.

    Raises MetricsFileError when the file is missing, damaged or not a metrics file."""
    with _read_errors(path):
        table = _bounded_table(path)
        return {
            "name": table.column("name").to_pylist(),
            "context": table.column("context").to_pylist(),
            "step": table.column("step").to_pylist(),
            "value": table.column("value").to_pylist(),
            "time_s": [us / 1e6 for us in table.column("time_us").to_pylist()],
            # Written since child processes' metrics are kept: absent (None) in older files.
            **{
                name: (
                    table.column(name).to_pylist()
                    if name in table.column_names
                    else [None] * table.num_rows
                )
                for name in _PROCESS_COLUMNS
            },
        }


@contextlib.contextmanager
def _read_errors(path: Any) -> Iterator[None]:
    """A metrics file that cannot be read, as one MetricsFileError."""
    import pyarrow as pa

    try:
        yield
    except MetricsFileError:
        raise
    # OSError: missing or unreadable; ArrowException: not Parquet; KeyError: another file's
    # columns; TypeError: columns of other types (text times, nulls)
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
        # pyarrow's messages repeat the path at length: the kind of failure is enough here.
        raise MetricsFileError(
            f"metrics file {path} cannot be read ({type(error).__name__})"
        ) from None


def _bounded_table(path: Any) -> Any:
    """A data file's table, read only when its rows are few enough to hold as Python values
    (a store is untrusted: 1 MB of Parquet can claim 60 M rows). Raises MetricsFileError."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).metadata.num_rows
    if rows > MAX_READ_ROWS:
        raise MetricsFileError(
            f"data file {path} holds {rows:,} rows, more than the {MAX_READ_ROWS:,} read at once"
        )
    return pq.read_table(path)


def read_metric_series(path: Any) -> list[tuple[str, str, list[int], list[float], list[float]]]:
    """A metrics file as one entry per (name, context) series: its steps, times (s) and
    values as Python lists, grouped by Arrow (much faster than `read_metrics_file`'s rows for
    long series). Raises MetricsFileError as `read_metrics_file` does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    with _read_errors(path):
        table = _bounded_table(path)
        names = pc.cast(table.column("name"), pa.string())
        contexts = pc.cast(table.column("context"), pa.string())
        series = []
        pairs = pa.table({"n": names, "c": contexts}).group_by(["n", "c"]).aggregate([])
        for pair in pairs.to_pylist():
            mask = pc.and_(pc.equal(names, pair["n"]), pc.equal(contexts, pair["c"]))
            rows = table.filter(mask)
            times = pc.divide(pc.cast(rows.column("time_us"), pa.float64()), 1e6)
            series.append(
                (
                    str(pair["n"]),
                    str(pair["c"]),
                    rows.column("step").to_pylist(),
                    times.to_pylist(),
                    pc.cast(rows.column("value"), pa.float64()).to_pylist(),
                )
            )
        return series
