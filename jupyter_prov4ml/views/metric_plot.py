"""Metric curves of stored runs, overlaid (`%prov plot`, `jupyter-prov4ml plot`), and a
notebook's runs' quality against their energy and time (`%prov energy`, `jupyter-prov4ml
energy`).

Points are read from each run's metrics file (`store.series_files.read_metrics_file`, the
reader `read_metrics` uses) and thinned only for drawing (`svg_plot.downsample`).
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jupyter_prov4ml.records import CellRun
from jupyter_prov4ml.store.layout import Store, StoredRun, UnsafeStorePath
from jupyter_prov4ml.store.series_files import METRICS_ROLE, MetricsFileError, read_metric_series
from jupyter_prov4ml.views.escape import html_text
from jupyter_prov4ml.views.svg_plot import (
    Dot,
    Scene,
    Series,
    line_chart,
    number,
    scatter_chart,
    scene_dot,
    scene_svg,
)

XAxis = Literal["step", "time"]
# A plot of more metrics than this shows the first ones and says so.
MAX_CHARTS = 6


class PlotError(LookupError):
    """Nothing to plot as asked (no such metric, no run with metrics); the message says why."""


@dataclass(frozen=True, slots=True)
class Curve:
    """One run's points of one (metric, context) series."""

    run: CellRun
    name: str
    context: str
    steps: Sequence[float]
    times_s: Sequence[float]
    values: Sequence[float]


@dataclass(frozen=True)
class Chart:
    """A drawn chart: its scene (SVG or PNG), a title and notes (what was left out)."""

    scene: Scene
    title: str
    notes: tuple[str, ...] = ()

    def svg(self) -> str:
        return scene_svg(self.scene)

    def dot(self) -> str:
        return scene_dot(self.scene)


@dataclass(frozen=True)
class PlotView:
    """Charts shown together in a notebook (inline SVG, hover for values) or as text."""

    charts: tuple[Chart, ...]
    notes: tuple[str, ...] = ()
    css_class: str = "jp-prov4ml-plots"

    def _repr_html_(self) -> str:
        notes = "".join(
            f"<p><small>{html_text(note)}</small></p>"
            for note in (*self.notes, *(n for c in self.charts for n in c.notes))
        )
        body = "".join(f"<div>{chart.svg()}</div>" for chart in self.charts)
        return f"<div class='{self.css_class}'>{body}{notes}</div>"

    def __repr__(self) -> str:
        lines = [f"chart: {chart.title}" for chart in self.charts]
        lines += [*self.notes, *(n for c in self.charts for n in c.notes)]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def run_label(run: CellRun) -> str:
    """How a run is named in a legend: its name and the end of its id."""
    tail = run.run_id.rsplit("-", 1)[-1]
    return f"{run.name} ({tail})" if run.name else run.run_id


def read_curves(store: Store, stored: StoredRun) -> list[Curve]:
    """Every metric series of a run, from its metrics file (none when it has no file; a
    damaged file raises PlotError naming it)."""
    files = [f for f in stored.run.data_files if f.role == METRICS_ROLE]
    if not files:
        return []
    try:
        series = read_metric_series(store.resolve(files[0].relpath))
    except (MetricsFileError, UnsafeStorePath) as error:
        raise PlotError(f"run {stored.run.run_id}: {error}") from None
    return [
        Curve(stored.run, name, context, steps, times, values)
        for name, context, steps, times, values in series
    ]


def plot_runs(
    store: Store,
    runs: Sequence[StoredRun],
    metric: str | None = None,
    context: str | None = None,
    x: XAxis = "step",
    group_by: str | None = None,
) -> PlotView:
    """The curves of `runs` overlaid, one chart per (metric, context): all of the runs'
    metrics unless `metric`/`context` say which. `group_by PARAM`: runs that differ only in
    PARAM (e.g. a seed) become one line, their mean, in a band of ± one standard deviation."""
    curves = [c for stored in runs for c in read_curves(store, stored)]
    if metric is not None:
        curves = [c for c in curves if c.name == metric]
    if context is not None:
        curves = [c for c in curves if c.context == context]
    if not curves:
        known = sorted({f"{c.name} [{c.context}]" for s in runs for c in read_curves(store, s)})
        wanted = " ".join(w for w in (metric, f"[{context}]" if context else None) if w)
        found = f"; they have: {', '.join(known)}" if known else " (none logged metrics)"
        raise PlotError(f"no metric {wanted or ''} in these runs{found}".replace("  ", " "))
    keys = list(dict.fromkeys((c.name, c.context) for c in curves))
    notes: list[str] = []
    if len(keys) > MAX_CHARTS:
        notes.append(f"{len(keys) - MAX_CHARTS} more metrics not shown; choose with --metric")
        keys = keys[:MAX_CHARTS]
    charts = []
    for name, ctx in keys:
        chosen = [c for c in curves if (c.name, c.context) == (name, ctx)]
        series = (
            _grouped_series(chosen, group_by, x) if group_by else [_series(c, x) for c in chosen]
        )
        title = f"{name} [{ctx}]"
        x_label = "step" if x == "step" else "time (s)"
        charts.append(Chart(line_chart(series, title, x_label, name), title))
    return PlotView(tuple(charts), tuple(notes))


def _series(curve: Curve, x: XAxis) -> Series:
    xs = curve.steps if x == "step" else curve.times_s
    return Series(run_label(curve.run), xs, curve.values)


def _grouped_series(curves: Sequence[Curve], param: str, x: XAxis) -> list[Series]:
    groups: dict[tuple[tuple[str, str], ...], list[Curve]] = {}
    for curve in curves:
        others = tuple(sorted((p.name, repr(p.value)) for p in curve.run.params if p.name != param))
        groups.setdefault(others, []).append(curve)
    series = []
    for others, members in groups.items():
        by_step: dict[float, list[float]] = {}
        at: dict[float, list[float]] = {}
        for curve in members:
            for step, time_s, value in zip(curve.steps, curve.times_s, curve.values, strict=False):
                if math.isfinite(value):
                    by_step.setdefault(step, []).append(value)
                    at.setdefault(step, []).append(time_s)
        steps = sorted(by_step)
        means = [statistics.fmean(by_step[s]) for s in steps]
        spread = [statistics.pstdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
        xs = steps if x == "step" else [statistics.fmean(at[s]) for s in steps]
        described = ", ".join(f"{name}={value}" for name, value in others) or "all runs"
        values = sorted({repr(_param(c.run, param)) for c in members})
        label = (
            f"{described}: mean ± sd over {param} ({len(members)} runs: "
            f"{', '.join(values[:4])}{', …' if len(values) > 4 else ''})"
        )
        series.append(
            Series(
                label,
                xs,
                means,
                [m - s for m, s in zip(means, spread, strict=True)],
                [m + s for m, s in zip(means, spread, strict=True)],
            )
        )
    return series


def _param(run: CellRun, name: str) -> Any:
    return next((p.value for p in run.params if p.name == name), None)


# -- energy against quality ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnergyPoint:
    """One run: the metric's final value, its energy and its duration."""

    run: CellRun
    value: float
    energy_j: float | None
    wall_time_s: float


def select_runs(
    runs: Sequence[StoredRun], name: str | None = None, notebook_path: str | None = None
) -> list[StoredRun]:
    """The `%%provrun` runs named `name` (a glob) or, without it, of the notebook
    `notebook_path` (all runs where neither is known)."""
    chosen = [s for s in runs if s.run.kind == "provrun"]
    if name is not None:
        return [s for s in chosen if s.run.name and fnmatch.fnmatchcase(s.run.name, name)]
    if notebook_path is not None:
        same = [s for s in chosen if s.run.cell.notebook_path == notebook_path]
        return same or chosen
    return chosen


def energy_view(runs: Sequence[StoredRun], metric: str, context: str | None = None) -> PlotView:
    """`metric`'s final value of each run against its energy, and against its wall time:
    which run bought how much quality for how much energy."""
    points: list[EnergyPoint] = []
    for stored in runs:
        run = stored.run
        found = [
            m for m in run.metrics if m.name == metric and (context is None or m.context == context)
        ]
        if not found:
            continue
        last = found[0].last
        value = float(last) if isinstance(last, int | float) else math.nan
        energy = run.energy.total_j if run.energy is not None and run.energy.readings else None
        points.append(EnergyPoint(run, value, energy, run.wall_time_s))
    if not points:
        raise PlotError(f"no run here logged the metric {metric!r}")
    with_energy = [p for p in points if p.energy_j is not None]
    dots_energy = [
        Dot(run_label(p.run), float(p.energy_j or 0.0), p.value, _hover(p, metric))
        for p in with_energy
    ]
    dots_time = [Dot(run_label(p.run), p.wall_time_s, p.value, _hover(p, metric)) for p in points]
    notes = []
    if len(with_energy) < len(points):
        notes.append(f"{len(points) - len(with_energy)} run(s) without an energy reading")
    charts = (
        Chart(
            scatter_chart(dots_energy, f"{metric} against energy", "energy (J)", metric),
            f"{metric} against energy",
        ),
        Chart(
            scatter_chart(dots_time, f"{metric} against time", "wall time (s)", metric),
            f"{metric} against time",
        ),
    )
    rows = [
        f"{run_label(p.run)}: {metric} {number(p.value)}, "
        + (f"{number(p.energy_j)} J, " if p.energy_j is not None else "energy unknown, ")
        + f"{number(p.wall_time_s)} s"
        for p in sorted(points, key=lambda p: (p.energy_j is None, p.energy_j or 0.0))
    ]
    return PlotView(charts, (*notes, *rows), "jp-prov4ml-energy")


def _hover(point: EnergyPoint, metric: str) -> str:
    run = point.run
    params = ", ".join(f"{p.name}={p.value!r}" for p in run.params[:8])
    energy = f"{number(point.energy_j)} J" if point.energy_j is not None else "energy unknown"
    return (
        f"{run_label(run)}\n{metric} {number(point.value)}\n{energy}, "
        f"{number(point.wall_time_s)} s" + (f"\n{params}" if params else "")
    )
