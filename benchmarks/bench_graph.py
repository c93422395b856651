"""The inline provenance graph of a run at 10, 1,000 and 100,000 loop steps.

Reported (issue 14): node count, SVG bytes and time to draw (PROV document → folded DOT →
SVG by Graphviz's `dot`) of the graph a `%%provrun` shows. Targets: ≤ 60 nodes and ≤ 150 KB
whatever the steps; time reported against the full graph of the 10-step run, drawn the same
way in the same run.
"""

from __future__ import annotations

import re
import shutil
import time

from _report import Result, checked, median

from jupyter_prov4ml.provmodel import run_document
from jupyter_prov4ml.records import (
    CellRef,
    CellRun,
    DataFile,
    EnergyLedger,
    EnergyReading,
    LoopStep,
    LoopSummary,
    MetricSummary,
    Param,
    SessionInfo,
    VariableSummary,
)
from jupyter_prov4ml.views.prov_graph import ProvGraph

SESSION = "20260101T000000-abcdef"
# A PROV document describes at most this many steps (capture/run_capture.py); the rest are in
# the steps file, and the graph says how many there were.
DOCUMENTED = 1_000
REPEATS = 3


def sample_run(steps: int) -> tuple[CellRun, SessionInfo]:
    """A `%%provrun` of `steps` loop steps with 12 parameters, 2 metrics, 3 data files and 9
    variables, as the capture records it (at most 1,000 steps described in full)."""
    if steps <= DOCUMENTED:
        indices = list(range(steps))
    else:
        indices = sorted({round(i * (steps - 1) / (DOCUMENTED - 1)) for i in range(DOCUMENTED)})
    ledger = EnergyLedger((EnergyReading("cpu", "cpu", 0.6, "estimated", 0.02),), 400.0)
    described = tuple(
        LoopStep(
            "epoch",
            i,
            1.7e9 + i * 0.02,
            0.02,
            0.018,
            energy=ledger,
            metrics_last=(("loss", 1 / (i + 1)),),
        )
        for i in indices
    )
    run = CellRun(
        run_id=f"{SESSION}-00001",
        session_id=SESSION,
        kind="provrun",
        cell=CellRef("ab" * 32, "%%provrun\nlr = 0.1\n", "cell-1", 3),
        started_at_unix_s=1.7e9,
        ended_at_unix_s=1.7e9 + steps * 0.02,
        wall_time_s=steps * 0.02,
        cpu_time_s=steps * 0.018,
        status="ok",
        name="baseline",
        params=tuple(Param(f"p{i}", i * 0.1, "literal") for i in range(12)),
        metrics=(
            MetricSummary("loss", "train", steps, 1.0, 0.01, 0.01, 1.0, steps - 1, 0),
            MetricSummary("acc", "val", steps, 0.1, 0.9, 0.1, 0.9, 0, steps - 1),
        ),
        steps=described,
        steps_total=steps,
        loops=(LoopSummary("epoch", steps, steps, steps),),
        data_files=tuple(
            DataFile(role, f"runs/x.{role}.parquet", "cd" * 32, 10, "application/x-parquet")
            for role in ("metrics", "steps", "hardware_samples")
        ),
        variables=tuple(VariableSummary(f"v{i}", "int", "1") for i in range(9)),
        energy=EnergyLedger((EnergyReading("cpu", "cpu", steps * 0.6, "estimated", 41),), 400.0),
    )
    info = SessionInfo(
        session_id=SESSION,
        user="ada",
        started_at_unix_s=1.7e9,
        software=(("jupyter_prov4ml", "0.1"),),
        hostname="node1",
        platform="Linux",
        cpu_model="CPU",
        cpu_count_logical=4,
        memory_total_bytes=1 << 30,
    )
    return run, info


def svg_width_pt(svg: str) -> float:
    found = re.search(r'<svg width="([\d.]+)pt"', svg)
    return float(found.group(1)) if found else float("nan")


def main() -> list[Result]:
    """Draw the inline graph of runs of 10, 1,000 and 100,000 steps."""
    if shutil.which("dot") is None:
        return []
    results: list[Result] = []
    small = run_document(*sample_run(10))
    for steps in (10, 1_000, 100_000):
        document = run_document(*sample_run(steps))
        times, full_times = [], []
        graph = None
        for _ in range(REPEATS):
            started = time.perf_counter()
            graph = ProvGraph.readable(document, "baseline")
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            ProvGraph.of(small, "baseline")
            full_times.append(time.perf_counter() - started)
        assert graph is not None and graph.svg is not None
        nodes = graph.svg.count('class="node"')
        width = svg_width_pt(graph.svg)
        results += [
            checked(
                f"inline graph, {steps:,} steps: draw time",
                median(times),
                "s",
                median(full_times),
                None,
                note="baseline: full graph of the 10-step run",
            ),
            checked(
                f"inline graph, {steps:,} steps: nodes",
                nodes,
                "nodes",
                None,
                60,
                target_is_overhead=False,
            ),
            checked(
                f"inline graph, {steps:,} steps: SVG size",
                len(graph.svg.encode()) / 1000,
                "KB",
                None,
                150,
                target_is_overhead=False,
            ),
            checked(
                f"inline graph, {steps:,} steps: width",
                width * 4 / 3,
                "px",
                None,
                1000,
                target_is_overhead=False,
            ),
        ]
    return results


if __name__ == "__main__":
    from _report import format_table

    print(format_table(main()))
