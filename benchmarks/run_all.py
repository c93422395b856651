"""Run every benchmark and print one table: measured, same-run baseline, overhead, ratio, target.

Exits 0 even when a target is missed (this is a report; FAIL rows say so), and a benchmark
that cannot run at all is reported as an ERROR line while the others still run.

Usage: `python benchmarks/run_all.py [--verbose]` (`make bench`); about 8 minutes.
"""

from __future__ import annotations

import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_context
import bench_dashboard
import bench_dask
import bench_dataflow
import bench_graph
import bench_hooks
import bench_index
import bench_kernel_cells
import bench_lightning
import bench_lineage
import bench_long_run
import bench_long_session
import bench_metrics
import bench_monitor
import bench_plot
import bench_process_tree
import bench_provrun
import bench_sampler
import bench_startup
from _report import Result, format_table


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    started = time.perf_counter()
    print(
        f"jupyter_prov4ml benchmarks: Python {platform.python_version()}, "
        f"{platform.machine()}, medians; baselines measured in this run"
    )
    benchmarks: list[tuple[str, Callable[[], list[Result]]]] = [
        ("bench_startup", lambda: bench_startup.main(verbose=verbose)),
        ("bench_hooks", bench_hooks.main),
        ("bench_kernel_cells", bench_kernel_cells.main),
        ("bench_provrun", bench_provrun.main),
        ("bench_dashboard", bench_dashboard.main),
        ("bench_index", bench_index.main),
        ("bench_metrics", bench_metrics.main),
        ("bench_sampler", bench_sampler.main),
        ("bench_process_tree", bench_process_tree.main),
        ("bench_monitor", bench_monitor.main),
        ("bench_long_run", bench_long_run.main),
        ("bench_dataflow", bench_dataflow.main),
        ("bench_lineage", bench_lineage.main),
        ("bench_long_session", bench_long_session.main),
        ("bench_graph", bench_graph.main),
        ("bench_plot", bench_plot.main),
        ("bench_lightning", bench_lightning.main),
        ("bench_dask", bench_dask.main),
        ("bench_context", bench_context.main),
    ]
    results: list[Result] = []
    errors: list[str] = []
    for name, run in benchmarks:
        print(f"running {name} ...", flush=True)
        try:
            results += run()
        # One broken benchmark (or a broken package) must not hide the others' figures.
        except Exception as error:  # noqa: BLE001
            detail = traceback.format_exc() if verbose else f"{type(error).__name__}: {error}"
            errors.append(f"ERROR in {name}: {detail.strip()}")
    print()
    print(format_table(results))
    for error in errors:
        print(error)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
