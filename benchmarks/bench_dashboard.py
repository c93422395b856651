"""The live dashboard's cost, through a real ipykernel: the same training cell under `%%provrun`
with the dashboard and with `--no-live`, alternating in one kernel (live, no-live, no-live, live,
...), so both arms share the machine's state.

The training cell is the one of issue 15: 20 epochs × 250 steps, two `log_metric` calls a step
(10,000 log calls), a little arithmetic per step so the run lasts long enough for the dashboard
to redraw (it redraws at most 4 times a second). Each run's kernel-side span (execute_input →
execute_reply header dates) and the kernel process's CPU over it are read.

Proves: (1) the dashboard adds <= 20 ms to a run (median of the paired differences of span);
(2) the kernel uses <= 5 % more CPU with it than with `--no-live` (ratio of the medians of CPU
per run). Reports the number of redraws the dashboard made per run.

Run alone: `python benchmarks/bench_dashboard.py` (about 40 s on a 2-vCPU VM).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import Result, checked, median, print_report
from bench_kernel_cells import US, _kernels

ROUNDS = 16  # pairs of runs
MS = 1e3
SPAN_TARGET_MS = 20.0
CPU_TARGET_RATIO = 1.05
TRAINING = """\
from jupyter_prov4ml import log_metric, track
for epoch in track(range(20), name="epoch"):
    for step in range(250):
        work = sum(range(4000))
        log_metric("loss", 1.0 / (step + 1), step=epoch * 250 + step)
        log_metric("accuracy", step / 250, step=epoch * 250 + step)
"""
LIVE = f"%%provrun --no-graph --name live\n{TRAINING}"
NO_LIVE = f"%%provrun --no-graph --no-live --name quiet\n{TRAINING}"


def main() -> list[Result]:
    spans: dict[str, list[float]] = {"live": [], "no-live": []}
    cpus: dict[str, list[float]] = {"live": [], "no-live": []}
    with _kernels(1) as pairs:
        kernel = pairs[0]["loaded"]
        kernel.load_extension()
        for source in (LIVE, NO_LIVE):  # warm-up: imports, first widgets
            kernel.cell(source)
        for round_ in range(ROUNDS):
            order = ("live", "no-live") if round_ % 2 == 0 else ("no-live", "live")
            for arm in order:
                before = kernel.cpu()[0]
                span, _ = kernel.cell(LIVE if arm == "live" else NO_LIVE)
                cpus[arm].append(kernel.cpu()[0] - before)
                spans[arm].append(span)
            kernel.drain()
    paired = [live - quiet for live, quiet in zip(spans["live"], spans["no-live"], strict=True)]
    ratio = median(cpus["live"]) / median(cpus["no-live"])
    return [
        checked(
            "dashboard: training cell, span added (paired)",
            (median(spans["no-live"]) + statistics.median(paired)) * MS,
            "ms",
            median(spans["no-live"]) * MS,
            SPAN_TARGET_MS,
            note=(
                f"{ROUNDS} adjacent pairs; median of the differences (shown) "
                f"{statistics.median(paired) * MS:+.1f} ms, of the medians "
                f"{(median(spans['live']) - median(spans['no-live'])) * MS:+.1f} ms; range "
                f"{min(paired) * MS:+.1f}.."
                f"{max(paired) * MS:+.1f}"
            ),
        ),
        checked(
            "dashboard: kernel CPU per run, live / no-live",
            ratio,
            "x",
            None,
            CPU_TARGET_RATIO,
            target_is_overhead=False,
            note=(
                f"process CPU per run ms: live {median(cpus['live']) * MS:.0f}, "
                f"no-live {median(cpus['no-live']) * MS:.0f} (µs per log call, live: "
                f"{median(cpus['live']) / 10_000 * US:.2f})"
            ),
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
