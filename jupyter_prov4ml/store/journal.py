"""The journal: one JSON line per event (session start, run open, run close), append-only.

It is the store's source of truth for what ran; PROV documents are derived from it, so a
killed kernel leaves provenance that the CLI can still list and export.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_prov4ml.capture.progress import Progress
from jupyter_prov4ml.records import (
    Artifact,
    CellRef,
    CellRun,
    DataFile,
    EnergyLedger,
    EnergyReading,
    HardwareSummary,
    LoopStep,
    MetricSummary,
    Param,
    SeriesSummary,
    SessionInfo,
    VariableSummary,
)


def encode_line(event: str, payload: dict[str, Any]) -> str:
    return json.dumps({"event": event, **payload}, separators=(",", ":"), allow_nan=False) + "\n"


def run_to_dict(run: CellRun) -> dict[str, Any]:
    encoded: dict[str, Any] = jsonable(dataclasses.asdict(run))
    return encoded


def run_from_dict(data: dict[str, Any]) -> CellRun:
    hardware = data.get("hardware")
    energy = data.get("energy")
    return CellRun(
        run_id=data["run_id"],
        session_id=data["session_id"],
        kind=data["kind"],
        cell=CellRef(**data["cell"]),
        started_at_unix_s=data["started_at_unix_s"],
        ended_at_unix_s=data["ended_at_unix_s"],
        wall_time_s=data["wall_time_s"],
        cpu_time_s=data["cpu_time_s"],
        status=data["status"],
        error_type=data.get("error_type"),
        name=data.get("name"),
        params=tuple(Param(**p) for p in data.get("params", ())),
        hardware=_hardware_from_dict(hardware) if hardware else None,
        energy=_energy_from_dict(energy) if energy else None,
        metrics=tuple(MetricSummary(**m) for m in data.get("metrics", ())),
        steps=tuple(_step_from_dict(step) for step in data.get("steps", ())),
        steps_total=data.get("steps_total", 0),
        artifacts=tuple(Artifact(**a) for a in data.get("artifacts", ())),
        data_files=tuple(DataFile(**f) for f in data.get("data_files", ())),
        reads=tuple(data.get("reads", ())),
        variables=tuple(VariableSummary(**v) for v in data.get("variables", ())),
        informed_by=tuple((run, tuple(names)) for run, names in data.get("informed_by", ())),
        derived_from_sha256=data.get("derived_from_sha256"),
    )


def session_to_dict(info: SessionInfo) -> dict[str, Any]:
    encoded: dict[str, Any] = jsonable(dataclasses.asdict(info))
    return encoded


def session_from_dict(data: dict[str, Any]) -> SessionInfo:
    fields = {f.name for f in dataclasses.fields(SessionInfo)}
    values = {k: v for k, v in data.items() if k in fields}
    values["software"] = tuple(tuple(pair) for pair in values.get("software", ()))
    values["gpus"] = tuple(values.get("gpus", ()))
    values["environment"] = tuple(tuple(pair) for pair in values.get("environment", ()))
    return SessionInfo(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class JournalState:
    """What one session's journal says: its session info, closed runs, and runs still open."""

    session: SessionInfo | None
    closed: dict[str, tuple[CellRun, str | None]]
    open: dict[str, dict[str, Any]]
    bad_lines: int
    # run id → the PROV document (relative path) that holds it, for plain cells
    documents: dict[str, str] = dataclasses.field(default_factory=dict)
    # run id → the progress journaled for a run still open (only when asked for)
    progress: dict[str, Progress] = dataclasses.field(default_factory=dict)


_PROGRESS_PREFIX = '{"event":"progress"'


def read_journal(path: Path, with_progress: bool = False) -> JournalState:
    """Parse a journal, skipping lines that are truncated or not ours (counted in bad_lines).

    `with_progress` also puts together the checkpoints of runs that never closed (what a
    killed kernel left); otherwise those lines are skipped unread.
    """
    session: SessionInfo | None = None
    closed: dict[str, tuple[CellRun, str | None]] = {}
    opened: dict[str, dict[str, Any]] = {}
    documents: dict[str, str] = {}
    progress: dict[str, Progress] = {}
    bad = 0
    for line in _lines(path):
        if line.startswith(_PROGRESS_PREFIX) and not with_progress:
            continue
        try:
            entry = json.loads(line)
            event = entry["event"]
            if event == "session":
                session = session_from_dict(entry["session"])
            elif event == "open":
                opened[entry["run_id"]] = entry
            elif event == "progress":
                run_id = entry["run_id"]
                if run_id in opened:
                    progress.setdefault(run_id, Progress()).add(entry)
            elif event == "document":
                documents.update(dict.fromkeys(entry["run_ids"], entry["path"]))
            elif event == "close":
                run = run_from_dict(entry["run"])
                closed[run.run_id] = (run, entry.get("prov_path"))
                opened.pop(run.run_id, None)
                progress.pop(run.run_id, None)
        except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
            bad += 1
    return JournalState(session, closed, opened, bad, documents, progress)


def _lines(path: Path) -> Iterator[str]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as journal:
            yield from journal
    except OSError:
        return


def _step_from_dict(data: dict[str, Any]) -> LoopStep:
    energy = data.get("energy")
    return LoopStep(
        loop=data["loop"],
        index=data["index"],
        started_at_unix_s=data["started_at_unix_s"],
        wall_time_s=data["wall_time_s"],
        cpu_time_s=data["cpu_time_s"],
        inner_iterations=tuple((n, c) for n, c in data.get("inner_iterations", ())),
        energy=_energy_from_dict(energy) if energy else None,
        hardware=tuple((n, SeriesSummary(**v)) for n, v in data.get("hardware", ())),
        metrics_last=tuple((n, v) for n, v in data.get("metrics_last", ())),
        completed=data.get("completed", True),
    )


def _hardware_from_dict(data: dict[str, Any]) -> HardwareSummary:
    return HardwareSummary(
        sample_count=data["sample_count"],
        interval_s=data["interval_s"],
        downsample_factor=data["downsample_factor"],
        series=tuple((name, SeriesSummary(**summary)) for name, summary in data["series"]),
    )


def _energy_from_dict(data: dict[str, Any]) -> EnergyLedger:
    return EnergyLedger(
        readings=tuple(EnergyReading(**reading) for reading in data["readings"]),
        carbon_intensity_g_per_kwh=data["carbon_intensity_g_per_kwh"],
    )


def jsonable(value: Any) -> Any:
    """Tuples to lists and non-finite floats to strings, so the journal stays strict JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
