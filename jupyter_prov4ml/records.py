"""Plain, frozen records of what was measured.

Everything on the hot path (cell hooks, the sampler) produces these; the PROV document is built
from them once, at save time. Units are part of every field name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "failed", "interrupted", "crashed", "running"]
RunKind = Literal["cell", "provrun"]
ParamValue = str | int | float | bool | None

EnergyMethod = Literal["measured-counter", "integrated-power", "rapl", "estimated", "partial"]
_JOULES_PER_KWH = 3.6e6


def co2_grams(energy_j: float, intensity_g_per_kwh: float) -> float:
    """Grams of CO2-equivalent for `energy_j` at a grid's carbon intensity (g/kWh)."""
    return energy_j / _JOULES_PER_KWH * intensity_g_per_kwh


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """Energy one device used over one window, and how it was obtained."""

    component: str  # "gpu" | "cpu"
    device: str  # e.g. "gpu0", "cpu-package-0", "cpu"
    energy_j: float
    method: EnergyMethod
    duration_s: float
    detail: str = ""

    def __post_init__(self) -> None:
        if not math.isfinite(self.energy_j) or self.energy_j < 0:
            raise ValueError(f"energy_j must be a finite number ≥ 0, got {self.energy_j!r}")

    @property
    def mean_power_w(self) -> float | None:
        """Average power over the window; None for an empty window."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else None


@dataclass(frozen=True, slots=True)
class CellRef:
    """Which code ran: the source's SHA-256 plus whatever the front end told us about the cell."""

    sha256: str
    source: str
    cell_id: str | None = None
    execution_count: int | None = None
    notebook_path: str | None = None

    @property
    def short_id(self) -> str:
        """A PROV-safe identifier of this cell version."""
        return f"cell_{self.sha256[:16]}"


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a run and where it came from (`magic`, `literal`, `api`, or
    `injected`: papermill's injected-parameters cell)."""

    name: str
    value: ParamValue
    source: str = "magic"


@dataclass(frozen=True, slots=True)
class HostSample:
    """One reading of the host by the sampler thread."""

    elapsed_s: float
    process_cpu_percent: float
    process_rss_bytes: int
    system_cpu_percent: float
    system_memory_used_bytes: int


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """count/first/last/min/max/mean of one sampled quantity."""

    count: int
    first: float
    last: float
    min: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: list[float]) -> SeriesSummary | None:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return None
        return cls(
            len(values), values[0], values[-1], min(finite), max(finite), sum(finite) / len(finite)
        )


@dataclass(frozen=True, slots=True)
class HardwareSummary:
    """What the sampler saw during a run: a summary per sampled column (CPU, RAM, each GPU)."""

    sample_count: int
    interval_s: float
    downsample_factor: int
    series: tuple[tuple[str, SeriesSummary], ...] = ()

    def get(self, column: str) -> SeriesSummary | None:
        for name, summary in self.series:
            if name == column:
                return summary
        return None


@dataclass(frozen=True, slots=True)
class EnergyLedger:
    """Energy of one window per device, each reading with its method, and the CO2 estimate."""

    readings: tuple[EnergyReading, ...]
    carbon_intensity_g_per_kwh: float

    @property
    def total_j(self) -> float:
        return sum(reading.energy_j for reading in self.readings)

    @property
    def co2_g(self) -> float:
        return co2_grams(self.total_j, self.carbon_intensity_g_per_kwh)

    def methods(self) -> str:
        """The distinct methods, e.g. `estimated` or `measured-counter+estimated`."""
        return "+".join(sorted({reading.method for reading in self.readings})) or "none"


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric series of a run, in a few numbers; the points themselves are in a file."""

    name: str
    context: str
    count: int
    first: float
    last: float
    min: float
    max: float
    step_of_min: int
    step_of_max: int


@dataclass(frozen=True, slots=True)
class LoopStep:
    """One iteration of the outermost tracked loop: its window, cost and energy."""

    loop: str
    index: int
    started_at_unix_s: float
    wall_time_s: float
    cpu_time_s: float
    inner_iterations: tuple[tuple[str, int], ...] = ()
    energy: EnergyLedger | None = None
    hardware: tuple[tuple[str, SeriesSummary], ...] = ()
    metrics_last: tuple[tuple[str, float], ...] = ()
    completed: bool = True


@dataclass(frozen=True, slots=True)
class LoopSummary:
    """One tracked loop of a run, whatever how many of its steps are described in full."""

    loop: str
    steps: int  # steps begun
    completed: int  # steps that ran to their end
    length: int | None = None  # the loop's length, where it was known (`len`, or `total=`)


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file a run produced (a checkpoint, a plot): identified by content, not copied."""

    name: str
    path: str
    sha256: str
    size_bytes: int
    copied_to: str | None = None


@dataclass(frozen=True, slots=True)
class VariableSummary:
    """A name a cell bound: its type, a short description, and a hash where cheap — never
    the value itself."""

    name: str
    type_name: str
    description: str
    value_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class DataFile:
    """A file in the store that a run's PROV document points at."""

    role: str
    relpath: str
    sha256: str
    size_bytes: int
    media_type: str


@dataclass(frozen=True, slots=True)
class GitState:
    """The git checkout a notebook lives in, when the run was recorded."""

    commit: str
    branch: str | None  # None on a detached HEAD
    dirty: bool
    diff_sha256: str | None = None  # of `git diff HEAD` as git printed it
    diff_relpath: str | None = None  # the redacted diff, in the store


@dataclass(frozen=True, slots=True)
class RunContext:
    """The environment a run saw beyond the session's: the full package list (a file in the
    store, by sha256), the versions of what the user imported, git, CUDA."""

    packages_sha256: str | None = None
    packages_relpath: str | None = None
    packages_count: int = 0
    imported: tuple[tuple[str, str], ...] = ()  # (top-level module, version)
    git: GitState | None = None
    accelerator: tuple[tuple[str, str], ...] = ()  # e.g. ("cuda_version", "12.4")


@dataclass(frozen=True, slots=True)
class SeedCall:
    """A seed given to a random generator while a run ran (`random.seed`, `torch.manual_seed`)."""

    function: str
    value: int | str | None


@dataclass(frozen=True, slots=True)
class Randomness:
    """What determined a run's random numbers, as far as could be seen cheaply."""

    seeds: tuple[SeedCall, ...] = ()
    torch_initial_seed: int | None = None
    torch_deterministic_algorithms: bool | None = None
    cudnn_deterministic: bool | None = None
    cudnn_benchmark: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """A model a run made or trained (`log_model`): its shape and a digest of its weights."""

    name: str
    class_name: str
    parameters_total: int | None = None
    parameters_trainable: int | None = None
    weights_bytes: int | None = None  # parameters and buffers
    dtypes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()  # top-level children, `name:Class`
    weights_sha256: str | None = None
    weights_hash_skipped: bool = False  # too large to hash (see models.MAX_HASH_BYTES)
    artifact_sha256: str | None = None  # the saved file (`save=True`), an artifact of the run
    framework: str | None = None


@dataclass(frozen=True, slots=True)
class DataInput:
    """A data input a run used (`log_input`): a file, a table, an array or a data loader."""

    name: str
    kind: str  # file | dataframe | array | dataloader | dataset | object
    class_name: str
    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    hash_method: str | None = None  # full | sampled | skipped
    rows: int | None = None
    columns: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    length: int | None = None  # batches of a loader, items of a dataset
    batch_size: int | None = None
    num_workers: int | None = None
    shuffle: bool | None = None
    drop_last: bool | None = None
    dataset_length: int | None = None  # samples a loader draws from
    fingerprint: str | None = None  # a Hugging Face dataset's own content fingerprint


@dataclass(frozen=True, slots=True)
class DaskClusterRecord:
    """The Dask cluster a run's work ran on (the scheduler's identity)."""

    scheduler_id: str
    scheduler_address: str
    span_id: str | None = None  # the `distributed.span` around the cell body
    tasks_dropped: int = 0  # task rows beyond the per-run bound (counted, not kept)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One incarnation of a Dask worker (a restarted worker is a new one) during a run: where
    it ran and what it used. `lost`: it died mid-run, its figures are those it last sent."""

    name: str
    address: str
    host: str
    pid: int
    nthreads: int
    status: str  # "ok" | "lost"
    cpu_time_s: float
    rss_peak_bytes: int
    task_count: int
    sample_count: int
    started_at_unix_s: float
    ended_at_unix_s: float
    energy: EnergyLedger | None = None
    gpu_uuids: tuple[str, ...] = ()
    gpu_memory_peak_bytes: int | None = None
    gpu_utilization_mean_percent: float | None = None


@dataclass(frozen=True, slots=True)
class TaskGroupRecord:
    """The run's Dask tasks of one task prefix: how many, their compute time, where they ran."""

    name: str
    task_count: int
    compute_time_s: float
    cpu_time_s: float | None = None  # Dask's own thread-CPU metric of the span
    erred_count: int = 0
    workers: tuple[str, ...] = ()  # worker names


@dataclass(frozen=True, slots=True)
class CellRun:
    """One execution of one cell: plain (`cell`) or fully captured (`provrun`)."""

    run_id: str
    session_id: str
    kind: RunKind
    cell: CellRef
    started_at_unix_s: float
    ended_at_unix_s: float
    wall_time_s: float
    cpu_time_s: float
    status: Status
    error_type: str | None = None
    name: str | None = None
    params: tuple[Param, ...] = ()
    hardware: HardwareSummary | None = None
    energy: EnergyLedger | None = None
    metrics: tuple[MetricSummary, ...] = ()
    steps: tuple[LoopStep, ...] = ()
    # all tracked steps; `steps` holds at most 1,000 of them (the steps file has every one)
    steps_total: int = 0
    loops: tuple[LoopSummary, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    data_files: tuple[DataFile, ...] = field(default=())
    # Lineage: names read (bound by earlier executions), names bound, the executions that
    # bound what was read (run id, names), and the previous version of this cell.
    reads: tuple[str, ...] = ()
    variables: tuple[VariableSummary, ...] = ()
    informed_by: tuple[tuple[str, tuple[str, ...]], ...] = ()
    derived_from_sha256: str | None = None
    # The run's context (packages, imports, git, CUDA), randomness, models made, data used.
    context: RunContext | None = None
    randomness: Randomness | None = None
    models: tuple[ModelSummary, ...] = ()
    inputs: tuple[DataInput, ...] = ()
    # Where a Dask cluster ran the cell's work: the cluster, each worker incarnation, task groups.
    cluster: DaskClusterRecord | None = None
    workers: tuple[WorkerRecord, ...] = ()
    task_groups: tuple[TaskGroupRecord, ...] = ()
    # A %%provrun's `cpu_time_s` covers the kernel's whole process tree (its children,
    # including those reaped during the run); this is the kernel's own share of it. None where
    # `cpu_time_s` is the kernel's alone (plain cells, runs recorded before this field).
    kernel_cpu_time_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who ran what, where: the agents and environment shared by every run of a kernel session."""

    session_id: str
    user: str
    started_at_unix_s: float
    software: tuple[tuple[str, str], ...]
    hostname: str
    platform: str
    cpu_model: str
    cpu_count_logical: int
    memory_total_bytes: int
    gpus: tuple[str, ...] = ()
    notebook_path: str | None = None
    # Allow-listed environment (Python, CUDA, job, thread counts), values redacted and capped:
    # see `environment.captured_environment`.
    environment: tuple[tuple[str, str], ...] = ()
