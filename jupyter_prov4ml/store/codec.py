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
from collections.abc import Callable, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.capture.progress import MetricChunk, ProgressSlice
from jupyter_prov4ml.notation import strict_json
from jupyter_prov4ml.records import (
    Artifact,
    CellRef,
    CellRun,
    DaskClusterRecord,
    DataFile,
    DataInput,
    EnergyLedger,
    EnergyReading,
    GitState,
    HardwareSummary,
    LoopStep,
    LoopSummary,
    MetricSummary,
    ModelSummary,
    Param,
    Randomness,
    RunContext,
    SeedCall,
    SeriesSummary,
    SessionInfo,
    TaskGroupRecord,
    VariableSummary,
    WorkerRecord,
)

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.recorder import ClosedCell

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


# One encoder for every journal line: `json.dumps` with options builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder `_ENCODE` builds on every call, built once: a plain cell's line is encoded by
# it directly (a third cheaper). Same output; None where the C accelerator is missing.
_C_ENCODE: Callable[[Any, int], Sequence[str]] | None = (
    c_make_encoder(None, _refuse, encode_basestring_ascii, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)


def encode_line(event: str, payload: dict[str, Any]) -> str:
    return _ENCODE({"event": event, **payload}) + "\n"


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
        # Added later: journals written before have none of these keys.
        context=_context_from_dict(data["context"]) if data.get("context") else None,
        randomness=_randomness_from_dict(data["randomness"]) if data.get("randomness") else None,
        models=tuple(_model_from_dict(m) for m in data.get("models", ())),
        inputs=tuple(_input_from_dict(i) for i in data.get("inputs", ())),
        kernel_cpu_time_s=_optional_seconds(data.get("kernel_cpu_time_s")),
        cluster=DaskClusterRecord(**data["cluster"]) if data.get("cluster") else None,
        workers=tuple(_worker_from_dict(w) for w in data.get("workers", ())),
        task_groups=tuple(_task_group_from_dict(g) for g in data.get("task_groups", ())),
    )


def _worker_from_dict(data: dict[str, Any]) -> WorkerRecord:
    energy = data.get("energy")
    return WorkerRecord(
        **{
            **data,
            "energy": _energy_from_dict(energy) if energy else None,
            "gpu_uuids": tuple(data.get("gpu_uuids", ())),
        }
    )


def _task_group_from_dict(data: dict[str, Any]) -> TaskGroupRecord:
    return TaskGroupRecord(**{**data, "workers": tuple(data.get("workers", ()))})


def _optional_seconds(value: Any) -> float | None:
    """A duration from a journal line (None when absent); raises TypeError for one that is
    not a number, as every decoder here does for a damaged line."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a duration is a number, not {type(value).__name__}")
    return float(value)


def _context_from_dict(data: dict[str, Any]) -> RunContext:
    git = data.get("git")
    return RunContext(
        packages_sha256=data.get("packages_sha256"),
        packages_relpath=data.get("packages_relpath"),
        packages_count=data.get("packages_count", 0),
        imported=tuple((str(n), str(v)) for n, v in data.get("imported", ())),
        git=GitState(**git) if git else None,
        accelerator=tuple((str(n), str(v)) for n, v in data.get("accelerator", ())),
    )


def _randomness_from_dict(data: dict[str, Any]) -> Randomness:
    return Randomness(
        seeds=tuple(SeedCall(**seed) for seed in data.get("seeds", ())),
        torch_initial_seed=data.get("torch_initial_seed"),
        torch_deterministic_algorithms=data.get("torch_deterministic_algorithms"),
        cudnn_deterministic=data.get("cudnn_deterministic"),
        cudnn_benchmark=data.get("cudnn_benchmark"),
    )


def _model_from_dict(data: dict[str, Any]) -> ModelSummary:
    tuples = ("dtypes", "devices", "layers")
    values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
    return ModelSummary(**values)


def _input_from_dict(data: dict[str, Any]) -> DataInput:
    tuples = ("columns", "dtypes", "shape")
    values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
    return DataInput(**values)


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


# A plain cell's close line, compact: most of a notebook's cells are plain and short, and this
# line is what each of them costs on disk. Keys are short and defaults are left out; what is the
# same for every cell of a session (its id, the notebook's path) is in the journal's session
# line; run ids of the session are their sequence numbers; durations are exact nanoseconds.
CELL_EVENT = "cell"


def cell_entry(cell: ClosedCell, session_id: str, source: str, sha256: str) -> dict[str, Any]:
    """The compact journal entry of a plain cell that ended (`source`: redacted; `sha256`:
    of the source as it ran)."""
    prefix = f"{session_id}-"
    entry: dict[str, Any] = {"event": CELL_EVENT, "n": _short_id(cell.run_id, prefix)}
    entry["sha"] = sha256
    entry["src"] = source
    if cell.cell_id is not None:
        entry["id"] = cell.cell_id
    if cell.execution_count is not None:
        entry["ec"] = cell.execution_count
    entry["t"] = cell.started_unix_s
    entry["w"] = cell.wall_ns
    entry["c"] = cell.cpu_ns
    if cell.status != "ok":
        entry["st"] = cell.status
    if cell.error_type is not None:
        entry["et"] = cell.error_type
    if cell.reads:
        entry["r"] = cell.reads
    if cell.variables:
        entry["v"] = [v if v[3] is not None else v[:3] for v in cell.variables]
    if cell.informed_by:
        entry["ib"] = [(_short_id(run, prefix), names) for run, names in cell.informed_by]
    if cell.derived_from_sha256 is not None:
        entry["df"] = cell.derived_from_sha256
    return entry


def encode_entry(entry: dict[str, Any]) -> str:
    """A journal line of an entry that already holds its `event`."""
    if _C_ENCODE is None:
        return _ENCODE(entry) + "\n"
    return "".join(_C_ENCODE(entry, 0)) + "\n"


def _short_id(run_id: str, prefix: str) -> int | str:
    tail = run_id[-5:]
    if (
        len(run_id) == len(prefix) + 5
        and tail.isdigit()
        and tail.isascii()
        and run_id.startswith(prefix)
    ):
        return int(tail)
    return run_id


def cell_run_id(short: Any, session_id: str) -> str:
    """A run id as a compact line writes it: a sequence number of `session_id`, or whole."""
    if type(short) is int and 0 <= short < 100_000:
        return f"{session_id}-{short:05d}"
    if isinstance(short, str):
        return short
    raise TypeError(f"not a run id: {short!r:.40}")


def expand_cell(entry: Mapping[str, Any], session_id: str, notebook_path: Any) -> dict[str, Any]:
    """The record (`run_to_dict`'s form) of a compact cell line of the session `session_id`;
    raises KeyError, TypeError or ValueError for a line that is not one."""
    started = entry["t"]
    wall_ns, cpu_ns = entry["w"], entry["c"]
    if not (type(wall_ns) is int and type(cpu_ns) is int and type(started) in (int, float)):
        raise TypeError("a cell's times are numbers")
    wall_s = wall_ns / 1e9
    return {
        "run_id": cell_run_id(entry["n"], session_id),
        "session_id": session_id,
        "kind": "cell",
        "cell": {
            "sha256": entry["sha"],
            "source": entry["src"],
            "cell_id": entry.get("id"),
            "execution_count": entry.get("ec"),
            "notebook_path": notebook_path,
        },
        "started_at_unix_s": started,
        "ended_at_unix_s": started + wall_s,
        "wall_time_s": wall_s,
        "cpu_time_s": cpu_ns / 1e9,
        "status": entry.get("st", "ok"),
        "error_type": entry.get("et"),
        "reads": list(entry.get("r", ())),
        "variables": [
            {
                "name": v[0],
                "type_name": v[1],
                "description": v[2],
                "value_sha256": v[3] if len(v) > 3 else None,
            }
            for v in entry.get("v", ())
        ],
        "informed_by": [
            [cell_run_id(run, session_id), list(names)] for run, names in entry.get("ib", ())
        ],
        "derived_from_sha256": entry.get("df"),
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
