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
    """One parameter of a run and where it came from (`magic`, `literal` or `api`)."""

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
        return cls(len(values), values[0], values[-1], min(finite), max(finite), sum(finite) / len(finite))


@dataclass(frozen=True, slots=True)
class HostSummary:
    """What the sampler saw during a run, in a few numbers."""

    sample_count: int
    interval_s: float
    downsample_factor: int
    process_cpu_percent: SeriesSummary | None
    process_rss_bytes: SeriesSummary | None
    system_cpu_percent: SeriesSummary | None
    system_memory_used_bytes: SeriesSummary | None


@dataclass(frozen=True, slots=True)
class DataFile:
    """A file in the store that a run's PROV document points at."""

    role: str
    relpath: str
    sha256: str
    size_bytes: int
    media_type: str


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
    host: HostSummary | None = None
    data_files: tuple[DataFile, ...] = field(default=())

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
