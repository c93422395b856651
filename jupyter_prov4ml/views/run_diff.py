"""What changed between two runs: parameters, code, metrics, cost and environment.

`diff_runs` compares two stored runs' records (and their sessions' environments) and returns a
`RunDiff`, shown side by side in a notebook (`%prov diff A B`) and as text in a terminal
(`jupyter-prov4ml diff A B`, or `--json`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from jupyter_prov4ml.notation import iso_utc, strict_json
from jupyter_prov4ml.records import CellRun, MetricSummary, SessionInfo
from jupyter_prov4ml.store.layout import Store, StoredRun
from jupyter_prov4ml.views.escape import html_text

Change = Literal["same", "changed", "added", "removed"]
_STYLE = {
    "changed": "background:#fff3c4",
    "added": "background:#e2f5e2",
    "removed": "background:#fbe0e0",
    "same": "",
}
_MARK = {"changed": "~", "added": "+", "removed": "-", "same": " "}


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One named value in both runs; `added` means only B has it, `removed` only A."""

    name: str
    a: Any
    b: Any
    change: Change

    @classmethod
    def of(cls, name: str, a: Any, b: Any, in_a: bool = True, in_b: bool = True) -> ValueChange:
        change: Change
        if in_a and not in_b:
            change = "removed"
        elif in_b and not in_a:
            change = "added"
        else:
            change = "same" if _same(a, b) else "changed"
        return cls(name, a, b, change)


@dataclass(frozen=True, slots=True)
class MetricPair:
    """One metric series (name, context) of either run, summarised."""

    name: str
    context: str
    a: MetricSummary | None
    b: MetricSummary | None

    @property
    def change(self) -> Change:
        if self.a is None:
            return "added"
        if self.b is None:
            return "removed"
        return "same" if self.a == self.b else "changed"


@dataclass(frozen=True, slots=True)
class RunSide:
    """The identity of one side of the comparison."""

    run_id: str
    name: str | None
    kind: str
    started_at: str
    cell_sha256: str
    prov_path: str | None

    @property
    def label(self) -> str:
        return f"{self.run_id} ({self.name})" if self.name else self.run_id


@dataclass(frozen=True)
class RunDiff:
    """The differences between run A and run B."""

    a: RunSide
    b: RunSide
    params: tuple[ValueChange, ...]
    code_diff: tuple[str, ...]  # unified diff lines, empty when the code is the same
    outcome: tuple[ValueChange, ...]  # status, duration, CPU time, energy, CO2
    metrics: tuple[MetricPair, ...]
    environment: tuple[ValueChange, ...]  # host, platform, CPU, GPUs, package versions

    @property
    def changed_params(self) -> tuple[ValueChange, ...]:
        return tuple(p for p in self.params if p.change != "same")

    @property
    def changed_environment(self) -> tuple[ValueChange, ...]:
        return tuple(e for e in self.environment if e.change != "same")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`jupyter-prov4ml diff --json`)."""

        def values(changes: tuple[ValueChange, ...]) -> list[dict[str, Any]]:
            return [{"name": c.name, "a": c.a, "b": c.b, "change": c.change} for c in changes]

        encoded: dict[str, Any] = strict_json(
            {
                "a": _side_dict(self.a),
                "b": _side_dict(self.b),
                "params": values(self.params),
                "code_diff": list(self.code_diff),
                "outcome": values(self.outcome),
                "metrics": [
                    {
                        "name": m.name,
                        "context": m.context,
                        "a": _metric_dict(m.a),
                        "b": _metric_dict(m.b),
                        "change": m.change,
                    }
                    for m in self.metrics
                ],
                "environment": values(self.environment),
            }
        )
        return encoded

    def __repr__(self) -> str:
        lines = [f"A: {self.a.label}", f"B: {self.b.label}"]
        changed = self.changed_params
        counts = {kind: sum(p.change == kind for p in changed) for kind in _MARK}
        lines.append(
            f"parameters: {counts['changed']} changed, {counts['added']} added, "
            f"{counts['removed']} removed, {len(self.params) - len(changed)} same"
        )
        for p in changed:
            lines.append(f"  {_MARK[p.change]} {p.name}: {_text(p.a, p)} -> {_text(p.b, p, 'b')}")
        lines.append("outcome:")
        for o in self.outcome:
            mark = _MARK[o.change]
            lines.append(f"  {mark} {o.name}: {_format(o.name, o.a)} -> {_format(o.name, o.b)}")
        if self.metrics:
            lines.append("metrics (last; min..max; count):")
            for m in self.metrics:
                lines.append(
                    f"  {_MARK[m.change]} {m.name} [{m.context}]: "
                    f"{_metric_text(m.a)} -> {_metric_text(m.b)}"
                )
        env = self.changed_environment
        if env:
            lines.append("environment:")
            lines += [f"  {_MARK[e.change]} {e.name}: {e.a} -> {e.b}" for e in env]
        elif self.environment:
            lines.append("environment: the same")
        if self.code_diff:
            lines.append("code:")
            lines += [f"  {line}" for line in self.code_diff]
        else:
            lines.append("code: the same")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        escape = html_text
        rows = [
            "<tr><th></th>"
            f"<th>A: <code>{escape(self.a.label)}</code></th>"
            f"<th>B: <code>{escape(self.b.label)}</code></th></tr>"
        ]

        def section(title: str, note: str = "") -> None:
            rows.append(
                f"<tr><th colspan='3' style='text-align:left'>{escape(title)}"
                f"{' <small>' + escape(note) + '</small>' if note else ''}</th></tr>"
            )

        def row(name: str, a: str, b: str, change: Change) -> None:
            style = _STYLE[change]
            attr = f" style='{style}'" if style else ""
            rows.append(
                f"<tr class='jp-prov4ml-{change}'{attr}><td>{escape(name)}</td>"
                f"<td>{escape(a)}</td><td>{escape(b)}</td></tr>"
            )

        changed = len(self.changed_params)
        section("parameters", f"{changed} differ" if changed else "the same")
        for p in self.params:
            row(p.name, _text(p.a, p), _text(p.b, p, "b"), p.change)
        section("outcome")
        for o in self.outcome:
            row(o.name, _format(o.name, o.a), _format(o.name, o.b), o.change)
        if self.metrics:
            section("metrics", "last; min..max; count")
            for m in self.metrics:
                row(f"{m.name} [{m.context}]", _metric_text(m.a), _metric_text(m.b), m.change)
        if self.environment:
            differ = len(self.changed_environment)
            section("environment", f"{differ} differ" if differ else "the same")
            for e in self.environment:
                row(e.name, _text(e.a, e), _text(e.b, e, "b"), e.change)
        table = f"<table class='jp-prov4ml-diff'>{''.join(rows)}</table>"
        if not self.code_diff:
            code = "<p>code: the same</p>"
        else:
            code = (
                "<details open><summary>code</summary><pre>"
                + "\n".join(_html_diff_line(line) for line in self.code_diff)
                + "</pre></details>"
            )
        return f"<div class='jp-prov4ml-rundiff'>{table}{code}</div>"


def diff_runs(a: StoredRun, b: StoredRun, store: Store | None = None) -> RunDiff:
    """Compare two stored runs: A is the reference, B the one compared with it."""
    run_a, run_b = a.run, b.run
    return RunDiff(
        a=_side(a, store),
        b=_side(b, store),
        params=_param_changes(run_a, run_b),
        code_diff=_code_diff(run_a, run_b),
        outcome=_outcome(run_a, run_b),
        metrics=_metric_pairs(run_a, run_b),
        environment=_environment(a.session, b.session),
    )


def _side(stored: StoredRun, store: Store | None) -> RunSide:
    run = stored.run
    prov: str | None = None
    if stored.prov_path is not None:
        try:
            prov = store.relpath(stored.prov_path) if store is not None else str(stored.prov_path)
        except ValueError:
            prov = str(stored.prov_path)
    return RunSide(
        run_id=run.run_id,
        name=run.name,
        kind=run.kind,
        started_at=iso_utc(run.started_at_unix_s),
        cell_sha256=run.cell.sha256,
        prov_path=prov,
    )


def _param_changes(a: CellRun, b: CellRun) -> tuple[ValueChange, ...]:
    values_a = {p.name: p.value for p in a.params}
    values_b = {p.name: p.value for p in b.params}
    names = list(values_a) + [n for n in values_b if n not in values_a]
    return tuple(
        ValueChange.of(n, values_a.get(n), values_b.get(n), n in values_a, n in values_b)
        for n in names
    )


def _code_diff(a: CellRun, b: CellRun) -> tuple[str, ...]:
    if a.cell.sha256 == b.cell.sha256:
        return ()
    return tuple(
        difflib.unified_diff(
            a.cell.source.splitlines(),
            b.cell.source.splitlines(),
            fromfile=f"A {a.run_id} (cell {a.cell.sha256[:12]})",
            tofile=f"B {b.run_id} (cell {b.cell.sha256[:12]})",
            lineterm="",
        )
    )


def _outcome(a: CellRun, b: CellRun) -> tuple[ValueChange, ...]:
    def energy(run: CellRun) -> float | None:
        return run.energy.total_j if run.energy is not None and run.energy.readings else None

    def co2(run: CellRun) -> float | None:
        return run.energy.co2_g if run.energy is not None and run.energy.readings else None

    def methods(run: CellRun) -> str | None:
        return run.energy.methods() if run.energy is not None and run.energy.readings else None

    pairs = [
        ("status", a.status, b.status),
        ("error_type", a.error_type, b.error_type),
        ("duration_s", a.wall_time_s, b.wall_time_s),
        ("cpu_time_s", a.cpu_time_s, b.cpu_time_s),
        ("energy_j", energy(a), energy(b)),
        ("energy_method", methods(a), methods(b)),
        ("co2_g", co2(a), co2(b)),
        ("loop_steps", a.steps_total or len(a.steps), b.steps_total or len(b.steps)),
        ("loop_steps_completed", _completed(a), _completed(b)),
    ]
    return tuple(
        ValueChange.of(name, va, vb) for name, va, vb in pairs if not (va is None and vb is None)
    )


def _metric_pairs(a: CellRun, b: CellRun) -> tuple[MetricPair, ...]:
    in_a = {(m.name, m.context): m for m in a.metrics}
    in_b = {(m.name, m.context): m for m in b.metrics}
    keys = list(in_a) + [k for k in in_b if k not in in_a]
    return tuple(
        MetricPair(name, context, in_a.get((name, context)), in_b.get((name, context)))
        for name, context in keys
    )


def _environment(a: SessionInfo | None, b: SessionInfo | None) -> tuple[ValueChange, ...]:
    if a is None and b is None:
        return ()

    def facts(info: SessionInfo | None) -> dict[str, Any]:
        if info is None:
            return {}
        found: dict[str, Any] = {
            "host": info.hostname,
            "platform": info.platform,
            "cpu_model": info.cpu_model,
            "cpu_count_logical": info.cpu_count_logical,
            "memory_total_bytes": info.memory_total_bytes,
            "gpus": ", ".join(info.gpus) or "none",
            "user": info.user,
        }
        found.update({f"package {name}": version for name, version in info.software})
        return found

    facts_a, facts_b = facts(a), facts(b)
    names = list(facts_a) + [n for n in facts_b if n not in facts_a]
    return tuple(
        ValueChange.of(n, facts_a.get(n), facts_b.get(n), n in facts_a, n in facts_b) for n in names
    )


def _same(a: Any, b: Any) -> bool:
    # 1 and 1.0 and True compare equal in Python; a parameter changing type is a change.
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


def _text(value: Any, change: ValueChange, side: str = "a") -> str:
    absent = (side == "a" and change.change == "added") or (
        side == "b" and change.change == "removed"
    )
    return "—" if absent else repr(value) if isinstance(value, str) else str(value)


def _format(name: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if name.endswith("_j"):
            return f"{value:.4g} J"
        if name.endswith("_g"):
            return f"{value:.4g} g"
        if name.endswith("_s"):
            return f"{value:.4g} s"
        return f"{value:.6g}"
    return str(value)


def _metric_text(m: MetricSummary | None) -> str:
    if m is None:
        return "—"
    return f"{_number(m.last)}; {_number(m.min)}..{_number(m.max)}; {m.count}"


def _number(value: Any) -> str:
    # Non-finite values come back from the journal as text ('nan', 'inf').
    return f"{value:.6g}" if isinstance(value, int | float) else str(value)


def _metric_dict(m: MetricSummary | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "count": m.count,
        "first": m.first,
        "last": m.last,
        "min": m.min,
        "max": m.max,
        "step_of_min": m.step_of_min,
        "step_of_max": m.step_of_max,
    }


def _side_dict(side: RunSide) -> dict[str, Any]:
    return {
        "run_id": side.run_id,
        "name": side.name,
        "kind": side.kind,
        "started_at": side.started_at,
        "cell_sha256": side.cell_sha256,
        "prov_path": side.prov_path,
    }


def _html_diff_line(line: str) -> str:
    escaped = html_text(line)
    if line.startswith(("+++", "---")):
        return f"<b>{escaped}</b>"
    if line.startswith("+"):
        return f"<span style='{_STYLE['added']}'>{escaped}</span>"
    if line.startswith("-"):
        return f"<span style='{_STYLE['removed']}'>{escaped}</span>"
    if line.startswith("@@"):
        return f"<span style='color:#666'>{escaped}</span>"
    return escaped


def _completed(run: CellRun) -> int:
    """Loop steps that ran to their end, over all of them (not only those described)."""
    if run.loops:
        return sum(loop.completed for loop in run.loops)
    return sum(step.completed for step in run.steps)
