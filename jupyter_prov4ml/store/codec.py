"""The store's one JSON codec: the journal form of every record, with its decoder beside it.

A record's form is its dataclass's fields (names with units, nested records as objects,
tuples as lists); non-finite floats are written as text (`'nan'`), so lines stay strict JSON.
Decoders read untrusted input: a malformed record raises KeyError, TypeError or ValueError,
which readers count as one damaged line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.capture.progress import MetricChunk, ProgressSlice
from jupyter_prov4ml.notation import strict_json
from jupyter_prov4ml.records import (
    Artifact,
    CellRef,
    CellRun,
    DataFile,
    EnergyLedger,
    EnergyReading,
    HardwareSummary,
    LoopStep,
    LoopSummary,
    MetricSummary,
    Param,
    SeriesSummary,
    SessionInfo,
    VariableSummary,
)

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.recorder import ClosedCell
    from jupyter_prov4ml.lineage.links import Links

# Kept for callers that name it so: the journal's JSON rule is `notation.strict_json`.
jsonable = strict_json


def plain(value: Any) -> Any:
    """A record as JSON-ready values, field by field (3x faster than `dataclasses.asdict`
    followed by `strict_json`, and the same result)."""
    fields = getattr(type(value), "__dataclass_fields__", None)
    if fields is not None:
        return {name: plain(getattr(value, name)) for name in fields}
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def encode_line(event: str, payload: dict[str, Any]) -> str:
    return json.dumps({"event": event, **payload}, separators=(",", ":"), allow_nan=False) + "\n"


def run_to_dict(run: CellRun) -> dict[str, Any]:
    encoded: dict[str, Any] = plain(run)
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
        loops=tuple(LoopSummary(**loop) for loop in data.get("loops", ())),
        artifacts=tuple(Artifact(**a) for a in data.get("artifacts", ())),
        data_files=tuple(DataFile(**f) for f in data.get("data_files", ())),
        reads=tuple(data.get("reads", ())),
        variables=tuple(VariableSummary(**v) for v in data.get("variables", ())),
        informed_by=tuple((run, tuple(names)) for run, names in data.get("informed_by", ())),
        derived_from_sha256=data.get("derived_from_sha256"),
    )


def session_to_dict(info: SessionInfo) -> dict[str, Any]:
    encoded: dict[str, Any] = plain(info)
    return encoded


def session_from_dict(data: dict[str, Any]) -> SessionInfo:
    fields = {f.name for f in dataclasses.fields(SessionInfo)}
    values = {k: v for k, v in data.items() if k in fields}
    values["software"] = tuple(tuple(pair) for pair in values.get("software", ()))
    values["gpus"] = tuple(values.get("gpus", ()))
    values["environment"] = tuple(tuple(pair) for pair in values.get("environment", ()))
    return SessionInfo(**values)


def links_payload(links: Links | None) -> dict[str, Any]:
    """The journal form of a record's lineage fields, as `run_to_dict` writes them."""
    if links is None:
        return {}
    return {
        "reads": list(links.reads),
        "variables": [
            {
                "name": v.name,
                "type_name": v.type_name,
                "description": v.description,
                "value_sha256": v.value_sha256,
            }
            for v in links.variables
        ],
        "informed_by": [[run, list(names)] for run, names in links.informed_by],
        "derived_from_sha256": links.derived_from_sha256,
    }


def closed_cell_to_dict(
    cell: ClosedCell, session_id: str, notebook_path: str | None, source: str
) -> dict[str, Any]:
    """The journal form of a plain cell, straight from the hook's raw facts: what
    `run_to_dict(build_run(...))` gives for it (a test holds the two equal), without
    building the record first — this runs for every executed cell. `source`: redacted."""
    window = cell.window
    wall_s = (cell.ended_perf_ns - window.started_perf_ns) / 1e9
    return {
        "run_id": window.run_id,
        "session_id": session_id,
        "kind": "cell",
        "cell": {
            "sha256": window.sha256,
            "source": source,
            "cell_id": window.cell_id,
            "execution_count": cell.execution_count,
            "notebook_path": notebook_path,
        },
        "started_at_unix_s": window.started_unix_s,
        "ended_at_unix_s": window.started_unix_s + wall_s,
        "wall_time_s": wall_s,
        "cpu_time_s": (cell.ended_cpu_ns - window.started_cpu_ns) / 1e9,
        "status": cell.status,
        "error_type": cell.error_type,
        **links_payload(cell.links),
    }


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


# -- progress slices: columns as base64 of little-endian 64-bit arrays --------------------------
# Lossless for NaN and infinities, about 11 bytes a value, cheap to encode.

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


def progress_to_dict(piece: ProgressSlice) -> dict[str, Any]:
    """The journal form of a progress slice (without its `event`)."""
    payload: dict[str, Any] = {
        "run_id": piece.run_id,
        "at_unix_s": piece.at_unix_s,
        "cpu_time_s": piece.cpu_time_s,
    }
    if piece.samples is not None:
        factor, columns = piece.samples
        payload["samples"] = {
            "downsample_factor": factor,
            "columns": {name: pack(values, "d") for name, values in columns.items()},
        }
    if piece.metrics_t0_ns is not None:
        payload["metrics_t0_ns"] = piece.metrics_t0_ns
    if piece.metrics:
        payload["metrics"] = [
            {
                "name": chunk.name,
                "context": chunk.context,
                "step": pack(chunk.steps, "q"),
                "value": pack(chunk.values, "d"),
                "time_ns": pack(chunk.times_ns, "q"),
            }
            for chunk in piece.metrics
        ]
    if piece.params:
        payload["params"] = plain(piece.params)
    return payload


def progress_from_dict(entry: Mapping[str, Any]) -> ProgressSlice:
    """A journaled progress slice; raises (KeyError, TypeError, ValueError) on a bad one."""
    samples = entry.get("samples")
    t0 = entry.get("metrics_t0_ns")
    return ProgressSlice(
        run_id=str(entry["run_id"]),
        at_unix_s=float(entry["at_unix_s"]),
        cpu_time_s=float(entry.get("cpu_time_s", 0.0)),
        samples=None if samples is None else _samples_from_dict(samples),
        metrics_t0_ns=None if t0 is None else int(t0),
        metrics=tuple(_chunk_from_dict(chunk) for chunk in entry.get("metrics", ())),
        params=tuple(Param(**param) for param in entry.get("params", ())),
    )


def _samples_from_dict(chunk: Mapping[str, Any]) -> tuple[int, dict[str, array[Any]]]:
    columns = {str(name): unpack(text, "d") for name, text in chunk["columns"].items()}
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1 or "elapsed_s" not in columns:
        raise ValueError("sample columns of a checkpoint differ in length")
    return int(chunk["downsample_factor"]), columns


def _chunk_from_dict(chunk: Mapping[str, Any]) -> MetricChunk:
    name, context = chunk["name"], chunk["context"]
    if not isinstance(name, str) or not isinstance(context, str):
        raise TypeError("a metric name and context are strings")
    steps, values = unpack(chunk["step"], "q"), unpack(chunk["value"], "d")
    times = unpack(chunk["time_ns"], "q")
    if not len(steps) == len(values) == len(times):
        raise ValueError("metric columns of a checkpoint differ in length")
    return MetricChunk(name, context, steps, values, times)
