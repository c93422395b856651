"""`jupyter-prov4ml plot | compare | energy`: metric curves, runs side by side, and quality
against energy, from a shell. Each command parses, delegates to views/run_views.py, and writes
text, an SVG or a PNG."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from jupyter_prov4ml.store.files import write_private
from jupyter_prov4ml.store.layout import Store

OpenStore = Callable[[argparse.Namespace], Store]
AddStore = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def cmd_view(args: argparse.Namespace, open_store: OpenStore) -> int:
    """Draw the view; with `-o FILE` write it there (`.png`: PNG, else SVG; `.html`: the
    notebook's HTML), else print its text form. LookupError (nothing to draw) → exit 2."""
    from jupyter_prov4ml.views.metric_plot import PlotView
    from jupyter_prov4ml.views.run_views import chart_file, run_view

    view = run_view(
        open_store(args),
        args.command,
        getattr(args, "runs", []),
        metric=getattr(args, "metric", None),
        context=getattr(args, "context", None),
        x=getattr(args, "x", "step"),
        group_by=getattr(args, "group_by", None),
        name=getattr(args, "name", None),
        notebook_path=str(Path(args.notebook).resolve())
        if getattr(args, "notebook", None)
        else None,
    )
    output = Path(args.output) if args.output else None
    if output is None:
        print(repr(view))
        return 0
    if output.suffix.lower() in (".html", ".htm"):
        page = f"<!DOCTYPE html><meta charset='utf-8'><body>{view._repr_html_()}</body>"
        write_private(output, page.encode("utf-8"))
    elif isinstance(view, PlotView):
        write_private(output, chart_file(view, output))
    elif view.curves is not None:
        write_private(output, chart_file(view.curves, output))
    else:
        print("jupyter-prov4ml: these runs have no curves to draw", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


def add_view_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_store: AddStore,
    open_store: OpenStore,
) -> None:
    """Add `plot`, `compare` and `energy` to the CLI."""

    def run(args: argparse.Namespace) -> int:
        return cmd_view(args, open_store)

    plot = with_store(sub.add_parser("plot", help="metric curves of runs, overlaid"))
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique ends of them)")
    plot.add_argument("--metric", metavar="NAME", help="only this metric (default: all)")
    plot.add_argument("--context", metavar="C", help="only this context (train, val, …)")
    plot.add_argument("--x", choices=("step", "time"), default="step", help="the x axis")
    plot.add_argument(
        "--group-by",
        metavar="PARAM",
        help="runs that differ only in PARAM (e.g. seed) drawn as their mean ± sd",
    )
    plot.add_argument("-o", "--output", help="curves.svg or curves.png (default: a text summary)")
    plot.set_defaults(func=run)

    compare = with_store(sub.add_parser("compare", help="two or more runs side by side"))
    compare.add_argument("runs", nargs="+", metavar="RUN", help="two or more run ids")
    compare.add_argument(
        "-o", "--output", help="compare.html (the whole view), or .svg/.png (the curves)"
    )
    compare.set_defaults(func=run)

    energy = with_store(
        sub.add_parser("energy", help="a metric against energy and time, over runs")
    )
    energy.add_argument("--metric", required=True, metavar="NAME", help="the metric (final value)")
    energy.add_argument("--context", metavar="C", help="only this context")
    energy.add_argument("--name", metavar="X", help="runs named X (a glob: 'base*')")
    energy.add_argument("--notebook", metavar="NB", help="runs of this notebook")
    energy.add_argument("-o", "--output", help="energy.svg or energy.png (default: text)")
    energy.set_defaults(func=run)
