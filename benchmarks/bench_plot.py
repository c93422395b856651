"""Metric curves: 3 runs × 100,000 points drawn as inline SVG (`%prov plot`'s drawing).

Target (issue 14): ≤ 1 s from the points in memory to the SVG text (thinned for display by
`svg_plot.downsample`, min/max per pixel bucket). Baseline: the same chart of 3 × 1,000
points, drawn in the same run. Also reported, as the reason for drawing by hand: the time
to import matplotlib (in a fresh interpreter, where it is installed) and to draw the same
3 × 100,000 points with it to SVG.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import Result, checked, interleave, median

from jupyter_prov4ml.views.svg_plot import Series, line_chart, scene_svg

RUNS = 3
POINTS = 100_000
REPEATS = 3

_MATPLOTLIB = """
import time
started = time.perf_counter()
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
imported = time.perf_counter()
import io, math
xs = list(range({points}))
figure, axes = plt.subplots(figsize=(7.6, 3.8))
for run in range({runs}):
    axes.plot(xs, [math.exp(-x / 20000) + 0.01 * run * math.sin(x) for x in xs], label=str(run))
axes.legend()
figure.savefig(io.StringIO(), format="svg")
print(imported - started, time.perf_counter() - imported)
"""


def curves(points: int) -> list[Series]:
    xs = list(range(points))
    return [
        Series(f"run {run}", xs, [math.exp(-x / 20000) + 0.01 * run * math.sin(x) for x in xs])
        for run in range(RUNS)
    ]


def draw(series: list[Series]) -> float:
    started = time.perf_counter()
    svg = scene_svg(line_chart(series, "loss [training]", "step", "loss"))
    elapsed = time.perf_counter() - started
    assert svg.count("<polyline") == RUNS
    return elapsed


def matplotlib_times() -> tuple[float, float] | None:
    """(import s, draw s) of matplotlib in a fresh interpreter; None where not installed."""
    script = _MATPLOTLIB.format(points=POINTS, runs=RUNS)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        return None
    imported, drawn = (float(word) for word in done.stdout.split())
    return imported, drawn


def stored_runs(root: Path, points: int) -> list[str]:
    """A store holding 3 runs of `points` loss points each, written by the real writer."""
    from jupyter_prov4ml.capture.metrics import MetricLog
    from jupyter_prov4ml.capture.recorder import OpenWindow, build_run
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.records import SessionInfo
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    session = "20260101T000000-abcdef"
    info = SessionInfo(session, "u", time.time(), (), "h", "p", "cpu", 2, 1)
    writer = StoreWriter(Store(root), info, Notices())
    writer.start()
    ids = []
    for run in range(RUNS):
        run_id = f"{session}-{run + 1:05d}"
        window = OpenWindow(run_id, "x = 1", f"{run:02d}" * 32, None, time.time(), 0, 0)
        metrics = MetricLog(0)
        for x in range(points):
            metrics.log("loss", math.exp(-x / 20000) + 0.01 * run * math.sin(x), x, "training")
        record = build_run(session, None, window, 10**9, 0, "provrun", "ok", None, 1)
        writer.submit_run(record, RunSeries(metrics))
        ids.append(run_id)
    assert writer.close()
    return ids


def plot_from_store(root: Path, ids: list[str]) -> float:
    """`%prov plot A B C --metric loss` as the magic does it: read the files, draw, HTML."""
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.views.run_views import run_view

    started = time.perf_counter()
    view = run_view(Store(root), "plot", ids, metric="loss")
    page = view._repr_html_()
    elapsed = time.perf_counter() - started
    assert page.count("<polyline") == RUNS
    return elapsed


def main() -> list[Result]:
    """Draw 3 × 100,000 points (and 3 × 1,000 as the baseline) as SVG; then the same read
    from a store, as `%prov plot` does."""
    large, small = curves(POINTS), curves(1_000)
    large_s = [draw(large) for _ in range(REPEATS)]
    small_s = [draw(small) for _ in range(REPEATS)]
    size = len(scene_svg(line_chart(large, "loss", "step", "loss")).encode())
    results = [
        checked(
            f"plot drawing only, {RUNS} runs × {POINTS:,} points",
            median(large_s),
            "s",
            median(small_s),
            1.0,
            target_is_overhead=False,
            note=f"baseline: {RUNS} × 1,000 points; SVG {size / 1000:.0f} KB",
        )
    ]
    with tempfile.TemporaryDirectory() as folder:
        big_ids = stored_runs(Path(folder, "big"), POINTS)
        small_ids = stored_runs(Path(folder, "small"), 1_000)
        samples = interleave(
            {
                "big": lambda: plot_from_store(Path(folder, "big"), big_ids),
                "small": lambda: plot_from_store(Path(folder, "small"), small_ids),
            },
            REPEATS,
        )
    results.append(
        checked(
            f"%prov plot from the store, {RUNS} runs × {POINTS:,} points",
            median(samples["big"]),
            "s",
            median(samples["small"]),
            1.0,
            target_is_overhead=False,
            note="read (Parquet) + thin + draw + HTML; baseline: 3 × 1,000 points",
        )
    )
    found = matplotlib_times()
    if found is not None:
        imported, drawn = found
        results += [
            checked("matplotlib import (fresh interpreter)", imported, "s", None, None),
            checked(
                f"matplotlib drawing, {RUNS} × {POINTS:,} points to SVG",
                drawn,
                "s",
                median(large_s),
                None,
                note="baseline: the hand-drawn SVG of the same points",
            ),
        ]
    return results


if __name__ == "__main__":
    from _report import format_table

    print(format_table(main()))
