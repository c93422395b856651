"""Two or more runs side by side (`%prov compare A B …`, `jupyter-prov4ml compare`):
parameters (those that differ highlighted), final and best metrics, duration, energy and CO2,
environment differences, and the runs' curves overlaid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.records import CellRun, MetricSummary
from jupyter_prov4ml.store.layout import Store, StoredRun
from jupyter_prov4ml.views.escape import html_text
from jupyter_prov4ml.views.metric_plot import PlotError, PlotView, plot_runs, run_label
from jupyter_prov4ml.views.run_diff import diff_runs
from jupyter_prov4ml.views.svg_plot import number

# Metrics whose best value is their lowest; any other metric's best is its highest.
LOWER_IS_BETTER = re.compile(
    r"(loss|err|error|mse|mae|rmse|perplexity|ppl|cost|wer|cer|time|latency)", re.IGNORECASE
)
_CHANGED = "background:#fff3c4"


@dataclass(frozen=True)
class Row:
    """One line of the comparison: a name and one text per run; `differs` when not all same."""

    section: str
    name: str
    values: tuple[str, ...]

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass(frozen=True)
class RunComparison:
    """What `compare` shows."""

    labels: tuple[str, ...]
    rows: tuple[Row, ...]
    curves: PlotView | None
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        width = max((len(r.name) for r in self.rows), default=4) + 2
        lines = ["runs: " + " | ".join(self.labels)]
        section = ""
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines.append(f"{section}:")
            mark = "~" if row.differs else " "
            lines.append(f" {mark} {row.name:<{width}}" + " | ".join(row.values))
        lines += list(self.notes)
        if self.curves is not None:
            lines.append(repr(self.curves))
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html_text(label)}</th>" for label in self.labels)
        out = [f"<table class='jp-prov4ml-compare'><tr><th></th>{head}</tr>"]
        section = ""
        span = len(self.labels) + 1
        for row in self.rows:
            if row.section != section:
                section = row.section
                out.append(
                    f"<tr><th colspan='{span}' style='text-align:left'>{html_text(section)}</th>"
                    "</tr>"
                )
            style = f" style='{_CHANGED}'" if row.differs else ""
            kind = "changed" if row.differs else "same"
            cells = "".join(f"<td>{html_text(v)}</td>" for v in row.values)
            out.append(
                f"<tr class='jp-prov4ml-{kind}'{style}><td>{html_text(row.name)}</td>{cells}</tr>"
            )
        out.append("</table>")
        out += [f"<p><small>{html_text(note)}</small></p>" for note in self.notes]
        curves = self.curves._repr_html_() if self.curves is not None else ""
        return f"<div class='jp-prov4ml-comparison'>{''.join(out)}{curves}</div>"


def compare_runs(store: Store, runs: Sequence[StoredRun]) -> RunComparison:
    """Compare `runs` (two or more; the first is the reference for the environment)."""
    if len(runs) < 2:
        raise LookupError("compare needs two runs or more")
    records = [s.run for s in runs]
    rows: list[Row] = []
    names = list(dict.fromkeys(p.name for run in records for p in run.params))
    for name in names:
        rows.append(Row("parameters", name, tuple(_param_text(run, name) for run in records)))
    rows += _outcome_rows(records)
    keys = list(dict.fromkeys((m.name, m.context) for run in records for m in run.metrics))
    for name, context in keys:
        found = [_metric(run, name, context) for run in records]
        lower = bool(LOWER_IS_BETTER.search(name))
        rows.append(Row("metrics", f"{name} [{context}] final", tuple(_last(m) for m in found)))
        rows.append(
            Row(
                "metrics",
                f"{name} [{context}] best ({'min' if lower else 'max'})",
                tuple(_best(m, lower) for m in found),
            )
        )
    rows += _environment_rows(store, runs)
    notes: list[str] = []
    try:
        curves: PlotView | None = plot_runs(store, runs)
    except PlotError as error:
        curves = None
        notes.append(f"no curves: {error}")
    return RunComparison(tuple(run_label(r) for r in records), tuple(rows), curves, tuple(notes))


def _param_text(run: CellRun, name: str) -> str:
    for param in run.params:
        if param.name == name:
            return repr(param.value)
    return "—"


def _outcome_rows(records: Sequence[CellRun]) -> list[Row]:
    def energy(run: CellRun) -> str:
        if run.energy is None or not run.energy.readings:
            return "—"
        return f"{number(run.energy.total_j)} J ({run.energy.methods()})"

    def co2(run: CellRun) -> str:
        if run.energy is None or not run.energy.readings:
            return "—"
        return f"{number(run.energy.co2_g)} g"

    return [
        Row("outcome", "status", tuple(run.status for run in records)),
        Row("outcome", "duration", tuple(f"{number(run.wall_time_s)} s" for run in records)),
        Row("outcome", "CPU time", tuple(f"{number(run.cpu_time_s)} s" for run in records)),
        Row("outcome", "energy", tuple(energy(run) for run in records)),
        Row("outcome", "CO2 (estimated)", tuple(co2(run) for run in records)),
    ]


def _metric(run: CellRun, name: str, context: str) -> MetricSummary | None:
    return next((m for m in run.metrics if (m.name, m.context) == (name, context)), None)


def _value(value: Any) -> str:
    return number(value) if isinstance(value, int | float) else str(value)


def _last(summary: MetricSummary | None) -> str:
    return "—" if summary is None else _value(summary.last)


def _best(summary: MetricSummary | None, lower: bool) -> str:
    if summary is None:
        return "—"
    value, step = (
        (summary.min, summary.step_of_min) if lower else (summary.max, summary.step_of_max)
    )
    return f"{_value(value)} (step {step})"


def _environment_rows(store: Store, runs: Sequence[StoredRun]) -> list[Row]:
    """Environment facts that differ between the first run and any other."""
    first = runs[0]
    changed: dict[str, list[str]] = {}
    for index, other in enumerate(runs[1:], start=1):
        for change in diff_runs(first, other, store).environment:
            if change.change == "same":
                continue
            values = changed.setdefault(change.name, ["—"] * len(runs))
            values[0] = "—" if change.change == "added" else str(change.a)
            values[index] = "—" if change.change == "removed" else str(change.b)
    for name, values in changed.items():
        # Runs compared equal to the first on this fact hold the first's value.
        reference = values[0]
        for index, other in enumerate(runs[1:], start=1):
            if values[index] == "—" and _same_as_first(store, first, other, name):
                values[index] = reference
    return [Row("environment", name, tuple(values)) for name, values in changed.items()]


def _same_as_first(store: Store, first: StoredRun, other: StoredRun, name: str) -> bool:
    return any(
        c.name == name and c.change == "same" for c in diff_runs(first, other, store).environment
    )
