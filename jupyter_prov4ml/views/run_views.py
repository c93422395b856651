"""The views of several stored runs, by command: `plot`, `compare`, `energy` — one entry for
the magic (`%prov plot …`) and the CLI (`jupyter-prov4ml plot …`), and the files the CLI
writes (SVG, or PNG rasterised by Graphviz)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_prov4ml.store.layout import Store, StoredRun
from jupyter_prov4ml.views.metric_plot import (
    PlotError,
    PlotView,
    energy_view,
    plot_runs,
    select_runs,
)
from jupyter_prov4ml.views.run_compare import RunComparison, compare_runs

USAGE = {
    "plot": "usage: %prov plot RUN [RUN …] [--metric NAME] [--context C] [--x step|time] "
    "[--group-by PARAM]",
    "compare": "usage: %prov compare RUN RUN [RUN …]",
    "energy": "usage: %prov energy --metric NAME [--name X] [--context C]",
}
# Runs one view reads at most (each is a file read): a plot of more is unreadable anyway.
MAX_RUNS = 50


def run_view(
    store: Store,
    command: str,
    refs: Sequence[str],
    *,
    metric: str | None = None,
    context: str | None = None,
    x: str = "step",
    group_by: str | None = None,
    name: str | None = None,
    notebook_path: str | None = None,
) -> PlotView | RunComparison:
    """`plot`, `compare` or `energy` of runs in `store`; a LookupError (PlotError) says what
    is missing or wrong with the request."""
    if command == "energy":
        if not metric or refs:
            raise LookupError(USAGE["energy"])
        runs = select_runs(store.runs(), name, None if name else notebook_path)
        if not runs:
            raise PlotError(f"no %%provrun runs{f' named {name!r}' if name else ''} here")
        return energy_view(runs[-MAX_RUNS:], metric, context)
    if command == "compare":
        if len(refs) < 2:
            raise LookupError(USAGE["compare"])
        return compare_runs(store, _find(store, refs))
    if command == "plot":
        if not refs:
            raise LookupError(USAGE["plot"])
        if x not in ("step", "time"):
            raise LookupError(USAGE["plot"])
        axis: Any = x
        return plot_runs(store, _find(store, refs), metric, context, axis, group_by)
    raise LookupError(f"unknown view {command!r}")


def _find(store: Store, refs: Sequence[str]) -> list[StoredRun]:
    if len(refs) > MAX_RUNS:
        raise LookupError(f"{len(refs)} runs given; at most {MAX_RUNS} at once")
    return [store.find(ref) for ref in dict.fromkeys(refs)]


def chart_file(view: PlotView, output: Path) -> bytes:
    """The bytes of `view`'s charts as the file `output` names: `.png` rasterised by
    Graphviz (`neato -n2`; raises DotUnavailable without it), anything else SVG. Several
    charts are stacked into one image."""
    from jupyter_prov4ml.views.svg_plot import Scene, scene_dot, scene_svg, stack

    scene: Scene = stack([chart.scene for chart in view.charts])
    if output.suffix.lower() == ".png":
        from jupyter_prov4ml.views.prov_graph import render_png

        return render_png(scene_dot(scene))
    svg = scene_svg(scene)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n").encode("utf-8")
