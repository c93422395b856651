"""The journal's record codec: the hand-written JSON codec against `msgspec`, in one run.

Answers "should the store encode and decode its records with msgspec?". Reports, with no
target, µs per record and the ratio to today's hand-written path, for (1) a plain cell record
(the writer's per-cell line) and (2) a large `%%provrun` record (20 params, 10 metric summaries,
1,000 loop steps with energy and hardware), each way: record → journal line and line → record.
msgspec is tried on the records as they are (frozen slotted dataclasses, which it supports
directly) and on frozen `msgspec.Struct` copies of them. Prints what each codec does with
NaN/inf, lone surrogates, tuples, unknown keys and wrongly typed values, and msgspec's import
time and installed size.

msgspec is not a dependency: it is imported if installed, else from $MSGSPEC_PATH (default
/tmp/msgspec_pkgs, e.g. `pip install --target /tmp/msgspec_pkgs msgspec`); without it the
benchmark says so and reports nothing.

Run alone: `python benchmarks/bench_codec.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import os
import re
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report

PLAIN_ROUNDS = 15
PLAIN_BATCH = 1_000  # records per sample
LARGE_ROUNDS = 9
LARGE_BATCH = 2
IMPORT_REPEATS = 5
US = 1e6
MSGSPEC_PATH = os.environ.get("MSGSPEC_PATH", "/tmp/msgspec_pkgs")


def _hand_codec() -> types.SimpleNamespace:
    """Today's hand-written codec and the records it handles: repoint here when they move."""
    from jupyter_prov4ml import records
    from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow, build_run
    from jupyter_prov4ml.lineage.links import Links
    from jupyter_prov4ml.records import EnergyReading
    from jupyter_prov4ml.redaction import redact_source
    from jupyter_prov4ml.store.codec import encode_line, run_from_dict, run_to_dict
    from jupyter_prov4ml.store.writer import StoreWriter

    return types.SimpleNamespace(
        encode_line=encode_line,  # (event, payload dict) -> str line
        run_to_dict=run_to_dict,  # CellRun -> JSON-able dict
        run_from_dict=run_from_dict,  # dict -> CellRun
        cell_payload=StoreWriter._cell_payload,  # (writer, ClosedCell) -> dict, by hand
        build_run=build_run,
        redact_source=redact_source,
        ClosedCell=ClosedCell,
        OpenWindow=OpenWindow,
        Links=Links,
        records=records,
        EnergyReading=EnergyReading,
    )


def _import_msgspec() -> Any:
    """msgspec, or None; $MSGSPEC_PATH goes on sys.path only if msgspec imports from there."""
    try:
        import msgspec
    except ImportError:
        if not os.path.isdir(MSGSPEC_PATH):
            return None
        sys.path.append(MSGSPEC_PATH)
        try:
            import msgspec
        except ImportError:
            sys.path.remove(MSGSPEC_PATH)
            return None
    import msgspec.json

    return msgspec


# -- msgspec.Struct copies of the records ------------------------------------------------------


def _struct_copies(msgspec: Any, roots: list[type]) -> dict[type, type]:
    """A frozen Struct per dataclass reachable from `roots`, same fields, types and defaults,
    with the dataclass's methods, properties and `__post_init__` (so validation is kept)."""
    copies: dict[type, type] = {}

    def swap(annotation: Any) -> Any:
        if dataclasses.is_dataclass(annotation):
            return copy(annotation)
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is None or not args or origin is typing.Literal:
            return annotation
        swapped = tuple(swap(arg) for arg in args)
        if origin in (types.UnionType, typing.Union):
            return functools.reduce(operator.or_, swapped)
        return origin[swapped]

    def copy(cls: Any) -> type:
        if cls not in copies:
            hints = typing.get_type_hints(cls)
            fields = []
            for field in dataclasses.fields(cls):
                kind = swap(hints[field.name])
                if field.default is not dataclasses.MISSING:
                    fields.append((field.name, kind, field.default))
                elif field.default_factory is not dataclasses.MISSING:
                    fields.append(
                        (field.name, kind, msgspec.field(default_factory=field.default_factory))
                    )
                else:
                    fields.append((field.name, kind))
            namespace = {
                name: value
                for name, value in vars(cls).items()
                if name == "__post_init__"
                or (
                    not name.startswith("__")
                    and isinstance(
                        value, types.FunctionType | property | classmethod | staticmethod
                    )
                )
            }
            copies[cls] = msgspec.defstruct(
                cls.__name__,
                fields,
                frozen=True,
                omit_defaults=True,  # as the writer's fast path does
                namespace=namespace,
                module=__name__,
            )
        return copies[cls]

    for root in roots:
        copy(root)
    return copies


# -- the records measured ----------------------------------------------------------------------

SOURCE = (
    "df = load_frame(path)\n"
    "scaled = (df[cols] - df[cols].mean()) / df[cols].std()\n"
    "model.fit(scaled, target)\n"
)


def _plain_cell(hand: types.SimpleNamespace) -> tuple[Any, Any]:
    """The writer's input for one plain cell (a ClosedCell) and the session it writes under."""
    records = hand.records
    window = hand.OpenWindow(
        run_id="run-3f2c9a1e7b5d4c60",
        source=SOURCE,
        sha256="9b" * 32,
        cell_id="a1b2c3d4-e5f6-4711-8899-aabbccddeeff",
        started_unix_s=1_733_300_000.123456,
        started_perf_ns=1_000_000_000,
        started_cpu_ns=500_000_000,
    )
    links = hand.Links(
        reads=("df", "cols", "model", "target"),
        variables=(
            records.VariableSummary("scaled", "DataFrame", "DataFrame 1000×12", "5e" * 32),
            records.VariableSummary("model", "LinearRegression", "LinearRegression()"),
        ),
        informed_by=(("run-11aa", ("df", "cols")), ("run-22bb", ("model", "target"))),
        derived_from_sha256="7c" * 32,
    )
    cell = hand.ClosedCell(window, 1_012_345_678, 509_876_543, "ok", None, 17, links)
    session = types.SimpleNamespace(session_id="sess-0123456789abcdef", notebook_path="nb.ipynb")
    return cell, types.SimpleNamespace(session=session)


def _large_run(hand: types.SimpleNamespace) -> Any:
    """A `%%provrun` record at its size limit: 1,000 steps, each with energy and hardware."""
    r = hand.records
    reading = hand.EnergyReading

    def ledger(scale: float) -> Any:
        return r.EnergyLedger(
            (
                reading("gpu", "gpu0", 310.5 * scale, "measured-counter", 1.25 * scale),
                reading("cpu", "cpu", 41.25 * scale, "estimated", 1.25 * scale, "TDP share"),
            ),
            385.0,
        )

    def series(i: int) -> Any:
        return r.SeriesSummary(20, 10.0 + i, 12.5 + i, 9.75 + i, 14.0 + i, 11.875 + i / 7)

    columns = ("process_cpu_percent", "process_rss_bytes", "gpu0_util_percent")
    steps = tuple(
        r.LoopStep(
            loop="epoch",
            index=i,
            started_at_unix_s=1_733_300_000.0 + 1.25 * i,
            wall_time_s=1.25 + i / 1e4,
            cpu_time_s=1.0 + i / 3e4,
            inner_iterations=(("batch", 50),),
            energy=ledger(1 + i / 1e3),
            hardware=tuple((name, series(i % 7)) for name in columns),
            metrics_last=(("loss", 1 / (i + 1)), ("accuracy", i / 1e3)),
        )
        for i in range(1_000)
    )
    values: tuple[Any, ...] = (0.001, 64, "adamw", True, None)
    params = tuple(r.Param(f"param_{i}", values[i % len(values)]) for i in range(20))
    metrics = tuple(
        r.MetricSummary(f"metric_{i}", "training", 1000, 2.5, 0.1 + i, 0.05, 2.5, 990, 0)
        for i in range(10)
    )
    hardware = r.HardwareSummary(
        sample_count=2_500,
        interval_s=0.5,
        downsample_factor=2,
        series=tuple((name, series(3)) for name in (*columns, "system_cpu_percent", "gpu0_mem")),
    )
    return r.CellRun(
        run_id="run-9e8d7c6b5a493827",
        session_id="sess-0123456789abcdef",
        kind="provrun",
        cell=r.CellRef("ab" * 32, SOURCE, "cell-1", 42, "nb.ipynb"),
        started_at_unix_s=1_733_300_000.0,
        ended_at_unix_s=1_733_301_250.5,
        wall_time_s=1_250.5,
        cpu_time_s=1_010.25,
        status="ok",
        name="train",
        params=params,
        hardware=hardware,
        energy=ledger(1_000.0),
        metrics=metrics,
        steps=steps,
        steps_total=1_000,
        artifacts=(r.Artifact("model", "out/model.pt", "cd" * 32, 44_000_000),),
        data_files=(
            r.DataFile("metrics", "runs/x.metrics.parquet", "ef" * 32, 20_480, "application/x"),
        ),
    )


# -- timing ------------------------------------------------------------------------------------


def _per_record(work: Callable[[], object], batch: int) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        for _ in range(batch):
            work()
        return (time.perf_counter() - start) / batch

    return sample


def _compare(
    title: str,
    baseline_name: str,
    arms: dict[str, Callable[[], object]],
    rounds: int,
    batch: int,
) -> list[Result]:
    """Interleaved medians; one row per arm after the first (the baseline)."""
    samples = interleave({name: _per_record(work, batch) for name, work in arms.items()}, rounds)
    baseline = median(samples[baseline_name]) * US
    return [
        checked(
            f"{title}: {name}",
            median(values) * US,
            "µs",
            baseline,
            None,
            note=f"baseline: {baseline_name}" if index == 1 else "",
        )
        for index, (name, values) in enumerate(samples.items())
        if name != baseline_name
    ]


# -- the figures -------------------------------------------------------------------------------


def _codecs(msgspec: Any, hand: types.SimpleNamespace) -> types.SimpleNamespace:
    records = hand.records
    structs = _struct_copies(msgspec, [records.CellRun])
    encoder = msgspec.json.Encoder()

    def close_line(run_type: type) -> Any:
        return msgspec.defstruct(
            "CloseLine", [("event", str), ("run", run_type), ("prov_path", str | None, None)]
        )

    def as_struct(run: Any) -> Any:
        return msgspec.convert(msgspec.to_builtins(run), structs[records.CellRun])

    return types.SimpleNamespace(
        structs=structs,
        as_struct=as_struct,
        encode=lambda payload: encoder.encode(payload) + b"\n",
        decode_dc=msgspec.json.Decoder(close_line(records.CellRun)).decode,
        decode_struct=msgspec.json.Decoder(close_line(structs[records.CellRun])).decode,
    )


def _plain(hand: types.SimpleNamespace, codec: types.SimpleNamespace) -> list:
    cell, writer = _plain_cell(hand)
    session = writer.session
    window = cell.window
    run = hand.build_run(
        session.session_id,
        session.notebook_path,
        window,
        cell.ended_perf_ns,
        cell.ended_cpu_ns,
        "cell",
        cell.status,
        cell.error_type,
        cell.execution_count,
        reads=cell.links.reads,
        variables=cell.links.variables,
        informed_by=cell.links.informed_by,
        derived_from_sha256=cell.links.derived_from_sha256,
    )
    struct_run = codec.as_struct(run)
    s = codec.structs
    r = hand.records

    def hand_fast() -> str:
        return hand.encode_line("close", {"run": hand.cell_payload(writer, cell)})

    def msgspec_build() -> bytes:
        built = hand.build_run(
            session.session_id,
            session.notebook_path,
            window,
            cell.ended_perf_ns,
            cell.ended_cpu_ns,
            "cell",
            cell.status,
            cell.error_type,
            cell.execution_count,
            reads=cell.links.reads,
            variables=cell.links.variables,
            informed_by=cell.links.informed_by,
            derived_from_sha256=cell.links.derived_from_sha256,
        )
        return codec.encode({"event": "close", "run": built})

    variable_struct = s[r.VariableSummary]

    def struct_build() -> bytes:
        # build_run with the Struct copies (records built as they are today: from the facts)
        links = cell.links
        wall_s = (cell.ended_perf_ns - window.started_perf_ns) / 1e9
        built = s[r.CellRun](
            run_id=window.run_id,
            session_id=session.session_id,
            kind="cell",
            cell=s[r.CellRef](
                sha256=window.sha256,
                source=hand.redact_source(window.source),
                cell_id=window.cell_id,
                execution_count=cell.execution_count,
                notebook_path=session.notebook_path,
            ),
            started_at_unix_s=window.started_unix_s,
            ended_at_unix_s=window.started_unix_s + wall_s,
            wall_time_s=wall_s,
            cpu_time_s=(cell.ended_cpu_ns - window.started_cpu_ns) / 1e9,
            status=cell.status,
            error_type=cell.error_type,
            reads=links.reads,
            variables=tuple(
                variable_struct(v.name, v.type_name, v.description, v.value_sha256)
                for v in links.variables
            ),
            informed_by=links.informed_by,
            derived_from_sha256=links.derived_from_sha256,
        )
        return codec.encode({"event": "close", "run": built})

    line = hand_fast()
    others = [
        hand.encode_line("close", {"run": hand.run_to_dict(run)}),
        msgspec_build(),
        struct_build(),
        codec.encode({"event": "close", "run": run}),
        codec.encode({"event": "close", "run": struct_run}),
    ]
    _check_same(hand, codec, run, struct_run, line, others)
    title = "plain cell"
    return [
        *_compare(
            f"{title}, facts → line",
            "hand fast path",
            {
                "hand fast path": hand_fast,
                "msgspec, build_run + encode": msgspec_build,
                "msgspec Struct, build + encode": struct_build,
                "redact_source alone (in every arm)": lambda: hand.redact_source(window.source),
            },
            PLAIN_ROUNDS,
            PLAIN_BATCH,
        ),
        *_encode_decode(title, hand, codec, run, struct_run, line, PLAIN_ROUNDS, PLAIN_BATCH),
    ]


def _encode_decode(
    title: str,
    hand: types.SimpleNamespace,
    codec: types.SimpleNamespace,
    run: Any,
    struct_run: Any,
    line: str,
    rounds: int,
    batch: int,
) -> list[Result]:
    """record → line and line → record (the line as read_journal gets it: a str)."""
    return [
        *_compare(
            f"{title}, record → line",
            "hand run_to_dict",
            {
                "hand run_to_dict": lambda: hand.encode_line(
                    "close", {"run": hand.run_to_dict(run)}
                ),
                "msgspec, dataclass": lambda: codec.encode({"event": "close", "run": run}),
                "msgspec Struct": lambda: codec.encode({"event": "close", "run": struct_run}),
            },
            rounds,
            batch,
        ),
        *_compare(
            f"{title}, line → record",
            "hand run_from_dict",
            {
                "hand run_from_dict": lambda: hand.run_from_dict(json.loads(line)["run"]),
                "msgspec, dataclass": lambda: codec.decode_dc(line).run,
                "msgspec Struct": lambda: codec.decode_struct(line).run,
            },
            rounds,
            batch,
        ),
    ]


def _check_same(
    hand: types.SimpleNamespace,
    codec: types.SimpleNamespace,
    run: Any,
    struct_run: Any,
    line: str,
    lines: list[str | bytes],
) -> None:
    """Every arm's line reads back (by the hand codec) as the record it started from, and
    msgspec reads the hand-written line back as it too. (Lines differ in bytes: the writer's
    fast path and the Struct copies leave out fields at their defaults.)"""
    for other in [line, *lines]:
        if hand.run_from_dict(json.loads(other)["run"]) != run:
            raise BenchmarkError(f"a line does not read back as its record: {other!r:.300}")
    if codec.decode_dc(line).run != run:
        raise BenchmarkError("msgspec does not read back the record the hand codec wrote")
    if codec.decode_struct(line).run != struct_run:
        raise BenchmarkError("the Struct copies do not read back the record they wrote")


def _large(hand: types.SimpleNamespace, codec: types.SimpleNamespace) -> list:
    run = _large_run(hand)
    struct_run = codec.as_struct(run)
    payload = {"run": hand.run_to_dict(run), "prov_path": "runs/x.prov.json"}
    line = hand.encode_line("close", payload)
    others = [
        codec.encode({"event": "close", "run": run, "prov_path": "runs/x.prov.json"}),
        codec.encode({"event": "close", "run": struct_run, "prov_path": "runs/x.prov.json"}),
    ]
    _check_same(hand, codec, run, struct_run, line, others)
    title = f"%%provrun record ({len(line) / 1024:,.0f} KiB)"
    return _encode_decode(title, hand, codec, run, struct_run, line, LARGE_ROUNDS, LARGE_BATCH)


def _import_cost(msgspec: Any) -> list[Result]:
    """`import msgspec` in a fresh interpreter that has already imported the journal codec."""
    package = Path(msgspec.__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package.parent), *sys.path]))
    script = "import jupyter_prov4ml.store.journal, jupyter_prov4ml.store.writer; import msgspec"
    times = []
    for _ in range(IMPORT_REPEATS):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        found = re.search(r"\|\s*(\d+) \| msgspec$", done.stderr, re.MULTILINE)
        if found is None:
            raise BenchmarkError("no msgspec line in -X importtime's output")
        times.append(int(found.group(1)) / 1e3)
    size = sum(path.stat().st_size for path in package.rglob("*") if path.is_file())
    return [
        checked(
            "msgspec import (on top of the store's own imports)",
            median(times),
            "ms",
            None,
            None,
            note=f"python -X importtime, cumulative, median of {IMPORT_REPEATS} fresh interpreters",
        ),
        checked(
            f"msgspec {msgspec.__version__} installed size",
            size / 1024,
            "KiB",
            None,
            None,
        ),
    ]


# -- correctness -------------------------------------------------------------------------------


def _attempt(work: Callable[[], Any]) -> str:
    try:
        value = work()
    except Exception as error:  # noqa: BLE001 - reported, whatever it is
        return f"{type(error).__name__}: {str(error).splitlines()[0][:60]}"
    return value if isinstance(value, str) else repr(value)


def correctness_notes(
    msgspec: Any, hand: types.SimpleNamespace, codec: types.SimpleNamespace
) -> list[str]:
    """What each codec does with awkward values: one line per case."""
    r = hand.records
    encode = msgspec.json.Encoder().encode
    decode = functools.partial(msgspec.json.decode, type=r.CellRun)
    base = dict(
        run_id="r",
        session_id="s",
        kind="cell",
        cell=r.CellRef("ab" * 32, "x = 1"),
        started_at_unix_s=1.0,
        ended_at_unix_s=2.0,
        wall_time_s=1.0,
        cpu_time_s=1.0,
        status="ok",
    )

    def hand_line(run: Any) -> str:
        return hand.encode_line("close", {"run": hand.run_to_dict(run)})

    def hand_read(line: str | bytes) -> Any:
        return hand.run_from_dict(json.loads(line)["run"])

    def run_json(line: str | bytes) -> str:
        return json.dumps(json.loads(line)["run"])

    # NaN/inf in a param (str | int | float | bool | None) and in a float field.
    params = r.CellRun(**base, params=(r.Param("lr", math.nan), r.Param("cap", math.inf)))
    metric = r.CellRun(**base, metrics=(r.MetricSummary("loss", "t", 2, math.nan, 0, 0, 0, 1, 1),))

    def values(run: Any) -> str:
        return repr([p.value for p in run.params] or [m.first for m in run.metrics])

    def nan_case(label: str, run: Any) -> str:
        ours, theirs = hand_line(run), encode({"event": "close", "run": run})
        hand_wrote = re.search(r'"(value|first)":([^,]*)', ours)
        msgspec_wrote = re.search(rb'"(value|first)":([^,]*)', theirs)
        assert hand_wrote is not None and msgspec_wrote is not None
        return (
            f"{label}: hand writes {hand_wrote.group(2)}, "
            f"reads {_attempt(lambda: values(hand_read(ours)))}"
            f" | msgspec writes {msgspec_wrote.group(2).decode()}, reads "
            f"{_attempt(lambda: values(codec.decode_dc(theirs).run))}; msgspec reads the hand "
            f"line: strict {_attempt(lambda: values(codec.decode_dc(ours).run))}, strict=False "
            f"{_attempt(lambda: values(decode(run_json(ours), strict=False)))}"
        )

    surrogate = r.CellRun(**{**base, "cell": r.CellRef("ab" * 32, "s = '\ud83d'")})
    lone = hand_line(surrogate)
    escaped = "\\ud83d" if "\\ud83d" in lone else "?"
    good = json.loads(hand_line(r.CellRun(**base)))["run"]

    def read_both(label: str, show: Callable[[Any], Any], **changes: Any) -> str:
        text = json.dumps({**good, **changes})
        return (
            f"{label}: hand {_attempt(lambda: show(hand.run_from_dict(json.loads(text))))}"
            f" | msgspec {_attempt(lambda: show(decode(text)))}"
        )

    def kinds(run: Any) -> str:
        return f"reads {type(run.reads).__name__}, informed_by {run.informed_by!r}"

    def accepted(field: str) -> Callable[[Any], str]:
        return lambda run: f"accepted, {field}={operator.attrgetter(field)(run)!r}"

    return [
        nan_case("NaN/inf param", params),
        nan_case("NaN float field (MetricSummary.first)", metric),
        f"lone surrogate in source: hand writes {escaped} (ASCII escape), reads "
        f"{_attempt(lambda: hand_read(lone).cell.source)!r} | msgspec "
        f"writes {_attempt(lambda: encode(surrogate))}; reads the hand line: "
        f"{_attempt(lambda: codec.decode_dc(lone))}",
        f"non-ASCII: hand {hand.encode_line('x', {'s': 'é'}).strip()} (ASCII) | msgspec "
        f"{encode({'event': 'x', 's': 'é'})!r} (UTF-8)",
        f"float text: hand {json.dumps([1e-05, 1e20])} | msgspec {encode([1e-05, 1e20]).decode()}"
        " (same values, lines not byte-identical)",
        read_both("lists → tuples", kinds, reads=["a"], informed_by=[["r0", ["a"]]]),
        read_both("unknown top-level key", accepted("run_id"), extra=1),
        read_both("unknown key in cell", accepted("cell.sha256"), cell={**good["cell"], "x": 1}),
        read_both("wall_time_s as a string", accepted("wall_time_s"), wall_time_s="1.0"),
        read_both("status not in the Literal", accepted("status"), status="bogus"),
        read_both(
            "execution_count 1.5",
            accepted("cell.execution_count"),
            cell={**good["cell"], "execution_count": 1.5},
        ),
        read_both(
            "EnergyReading energy_j < 0",
            accepted("energy"),
            energy={
                "readings": [
                    {
                        "component": "cpu",
                        "device": "cpu",
                        "energy_j": -1.0,
                        "method": "estimated",
                        "duration_s": 1.0,
                    }
                ],
                "carbon_intensity_g_per_kwh": 400.0,
            },
        ),
        f"msgspec.ValidationError is a ValueError (read_journal counts it as a bad line): "
        f"{issubclass(msgspec.ValidationError, ValueError)}",
    ]


def main() -> list[Result]:
    msgspec = _import_msgspec()
    if msgspec is None:
        print("msgspec not installed: skipped")
        return []
    hand = _hand_codec()
    codec = _codecs(msgspec, hand)
    print("codec correctness:")
    for line in correctness_notes(msgspec, hand, codec):
        print(f"  {line}")
    return _plain(hand, codec) + _large(hand, codec) + _import_cost(msgspec)


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
