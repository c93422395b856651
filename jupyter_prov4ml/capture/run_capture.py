"""What user code attaches to the running cell through the public API: parameters, metrics,
tracked loops and artifacts. One RunCapture per run, created on first use, so a re-run cell
starts empty (nothing leaks from one run into the next)."""

from __future__ import annotations

import bisect
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_prov4ml.capture.child_metrics import own_origin
from jupyter_prov4ml.capture.loops import LoopTracker, RawStep
from jupyter_prov4ml.capture.metrics import MetricLog
from jupyter_prov4ml.capture.params import make_param, param_text
from jupyter_prov4ml.hardware.energy import estimate_cpu_energy_j, gpu_window_energy
from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.records import (
    Artifact,
    DataInput,
    EnergyLedger,
    EnergyReading,
    LoopStep,
    LoopSummary,
    ModelSummary,
    Param,
    SeriesSummary,
    Status,
)
from jupyter_prov4ml.settings import DEFAULT_WATTS_PER_CORE, EnergyConfig

_STEP_COLUMNS = ("process_cpu_percent", "process_rss_bytes")
_GPU_STEP_FIELDS = ("utilization_percent", "memory_used_bytes", "power_w")


class RunCapture:
    """The API's view of one run (main thread; the live view reads it from the sampler)."""

    def __init__(self, t0_ns: int, step_depth: int = 1) -> None:
        self.params: list[Param] = []
        self.metrics = MetricLog(t0_ns, own_origin())
        self.loops = LoopTracker(step_depth)
        self.artifacts: list[Artifact] = []
        self.models: list[ModelSummary] = []
        self.inputs: list[DataInput] = []
        # How a framework said its training ended (`report_status`), the latest report winning.
        self.reported_status: tuple[Status, str | None] | None = None

    def is_empty(self) -> bool:
        return not (
            self.params
            or self.metrics.series
            or self.loops.steps
            or self.artifacts
            or self.models
            or self.inputs
            or self.reported_status
        )

    def report_status(self, status: Status, error_type: str | None) -> None:
        """A framework's own word on how training ended (Lightning's `finalize("failed")`
        after it caught the error, an interrupted fit): see `outcome`."""
        self.reported_status = (status, error_type)

    def outcome(self, status: Status, error_type: str | None) -> tuple[Status, str | None]:
        """The run's status from how its cell ended and what a framework reported: a
        framework's failure counts when the cell ended `ok` (it swallowed the error), and its
        interruption when the cell failed (Lightning turns Ctrl-C into `SystemExit`); a
        framework's success never hides the cell's failure."""
        reported = self.reported_status
        if reported is None or reported[0] == "ok" or status == "interrupted":
            return status, error_type
        if status == "ok" or reported[0] == "interrupted":
            return reported
        return status, error_type

    def unique_name(self, name: str, taken: list[str]) -> str:
        """`name`, or `name_2`, `name_3`… when a model or input of this run already has it."""
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}_{number}"
        return candidate

    def log_param(self, name: str, value: object, source: str = "api") -> None:
        if isinstance(name, str):
            name = str.__str__(name)  # a subclass's own methods may raise
        if not isinstance(name, str) or not name:
            raise ValueError(f"a parameter name must be a non-empty string, got {name!r:.60}")
        self.params.append(make_param(name, param_text(value), source))

    def log_artifact(self, path: Path, name: str | None, copied: Path | None) -> Artifact:
        """Identify `path` by content now (what it holds when logged is what the run made);
        `copied`: where the store keeps a copy of it, if it does."""
        size = path.stat().st_size
        digest = file_sha256(path)
        artifact = Artifact(
            name or path.name,
            str(path.resolve()),
            digest,
            size,
            None if copied is None else str(copied),
        )
        self.artifacts.append(artifact)
        return artifact

    def log_folder_artifact(self, path: Path, name: str | None) -> Artifact:
        """A folder the run produced (a Hugging Face `checkpoint-N`), identified as a whole by
        `folder_sha256`; its size is the sum of its files'."""
        digest, size = folder_sha256(path)
        artifact = Artifact(name or path.name, str(path.resolve()), digest, size)
        self.artifacts.append(artifact)
        return artifact


def folder_sha256(folder: Path) -> tuple[str, int]:
    """The SHA-256 of a folder as a whole, and its files' total size: one line per regular
    file under it, `<sha256>  <size>  <relative/posix/path>`, sorted by path, hashed
    (symbolic links are not followed: a link is a line of its own with its target)."""
    lines: list[str] = []
    total = 0
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            lines.append(f"link  {relative} -> {os.readlink(path)}")
        elif path.is_file():
            size = path.stat().st_size
            total += size
            lines.append(f"{file_sha256(path)}  {size}  {relative}")
    text = "\n".join(lines).encode("utf-8", "surrogateescape")
    return hashlib.sha256(text).hexdigest(), total


@dataclass(frozen=True)
class RunSeries:
    """A run's series, handed as they are to the store writer, whose thread encodes them as
    the run's data files (metrics, hardware samples, loop steps)."""

    metrics: MetricLog | None = None
    samples: SampleColumns | None = None
    steps: tuple[RawStep, ...] = ()
    watts_per_core: float = DEFAULT_WATTS_PER_CORE
    # One row per Dask task of the run, as columns (cluster_figures.TASK_COLUMNS).
    dask_tasks: Mapping[str, Sequence[Any]] | None = None


@dataclass(frozen=True)
class StepContext:
    """What turning raw step windows into LoopSteps needs to know about the run."""

    samples: SampleColumns | None
    sampler_t0_ns: int
    gpu_count: int
    energy: EnergyConfig


# PROV documents and the journal describe at most this many steps in full (evenly spaced,
# first and last included); every step is in the run's steps file. A 66k-batch loop would
# otherwise take minutes to save and could be lost at kernel exit.
MAX_DOCUMENTED_STEPS = 1_000


@dataclass(frozen=True)
class FinishedSteps:
    """The steps of a run: those described in full, and all of them (for the steps file)."""

    documented: tuple[LoopStep, ...]
    total: int
    raw: tuple[RawStep, ...]
    loops: tuple[LoopSummary, ...] = ()


def finish_steps(capture: RunCapture, context: StepContext) -> FinishedSteps:
    """Attach hardware aggregates, energy and last metric values to the documented steps
    (run close); all steps go to the steps file with their times, CPU and CPU energy."""
    capture.loops.finish()
    raw = capture.loops.steps
    chosen = documented_indices(len(raw), MAX_DOCUMENTED_STEPS)
    documented = tuple(_finish_step(raw[i], capture.metrics, context) for i in chosen)
    return FinishedSteps(documented, len(raw), tuple(raw), loop_summaries(raw, capture.loops))


def loop_summaries(raw: Sequence[RawStep], tracker: LoopTracker) -> tuple[LoopSummary, ...]:
    """Per stepped loop: steps begun and completed (all of them, not only the documented),
    and its length where known."""
    begun: dict[str, int] = {}
    completed: dict[str, int] = {}
    for step in raw:
        begun[step.loop] = begun.get(step.loop, 0) + 1
        completed[step.loop] = completed.get(step.loop, 0) + step.completed
    return tuple(
        LoopSummary(name, count, completed[name], tracker.lengths.get(name))
        for name, count in begun.items()
    )


def documented_indices(count: int, limit: int) -> list[int]:
    """Up to `limit` evenly spaced indices of `count`, always with the first and the last."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def _finish_step(raw: RawStep, metrics: MetricLog, context: StepContext) -> LoopStep:
    duration_s = max(0.0, (raw.ended_ns - raw.started_ns) / 1e9)
    readings: list[EnergyReading] = [
        EnergyReading(
            "cpu",
            "cpu",
            estimate_cpu_energy_j(max(0.0, raw.cpu_time_s), context.energy.watts_per_core),
            "estimated",
            duration_s,
        )
    ]
    hardware: list[tuple[str, SeriesSummary]] = []
    samples = context.samples
    if samples is not None and len(samples):
        times = samples.column("elapsed_s")
        start_s = (raw.started_ns - context.sampler_t0_ns) / 1e9
        end_s = (raw.ended_ns - context.sampler_t0_ns) / 1e9
        low, high = bisect.bisect_left(times, start_s), bisect.bisect_right(times, end_s)
        columns = list(_STEP_COLUMNS) + [
            f"gpu{i}_{name}" for i in range(context.gpu_count) for name in _GPU_STEP_FIELDS
        ]
        for column in columns:
            summary = SeriesSummary.of(samples.column(column)[low:high])
            if summary is not None:
                hardware.append((column, summary))
        for index in range(context.gpu_count):
            reading = _gpu_step_energy(samples, index, times, start_s, end_s, low, high)
            if reading is not None:
                readings.append(reading)
    return LoopStep(
        loop=raw.loop,
        index=raw.index,
        started_at_unix_s=raw.started_unix_s,
        wall_time_s=duration_s,
        cpu_time_s=raw.cpu_time_s,
        inner_iterations=raw.inner_iterations,
        energy=EnergyLedger(tuple(readings), context.energy.carbon_intensity_g_per_kwh),
        hardware=tuple(hardware),
        metrics_last=tuple(metrics.points_between(raw.started_ns, raw.ended_ns).items()),
        completed=raw.completed,
    )


def _gpu_step_energy(
    samples: SampleColumns,
    index: int,
    times: Sequence[float],
    start_s: float,
    end_s: float,
    low: int,
    high: int,
) -> EnergyReading | None:
    """A step's GPU energy from the sampled cumulative counter, interpolated at the step's
    edges (the sampler reads it at 10 Hz; no NVML call on the hot path), else its power."""
    counter = samples.column(f"gpu{index}_energy_mj")
    first = _interpolate(times, counter, start_s)
    last = _interpolate(times, counter, end_s)
    power = samples.column(f"gpu{index}_power_w")
    reading = gpu_window_energy(
        None if first is None else round(first),
        None if last is None else round(last),
        times[low:high],
        power[low:high],
        max(0.0, end_s - start_s),
        device=f"gpu{index}",
    )
    if reading is not None and reading.method == "measured-counter":
        return EnergyReading(
            reading.component,
            reading.device,
            reading.energy_j,
            reading.method,
            reading.duration_s,
            "counter sampled at the sampler's rate, interpolated at the step's edges",
        )
    return reading


def _interpolate(times: Sequence[float], values: Sequence[float], at: float) -> float | None:
    position = bisect.bisect_left(times, at)
    if position == 0 or position >= len(times):
        return None
    t0, t1 = times[position - 1], times[position]
    v0, v1 = values[position - 1], values[position]
    if math.isnan(v0) or math.isnan(v1) or t1 <= t0:
        return None
    return v0 + (v1 - v0) * (at - t0) / (t1 - t0)


def artifact_name_ok(name: Any) -> bool:
    return name is None or (isinstance(name, str) and 0 < len(name) <= 200)
