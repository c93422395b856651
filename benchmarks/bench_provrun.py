"""Cost of `%%provrun` around an empty body, against the same body run plainly, extension loaded.

Proves: `%%provrun --no-graph --no-live` on `pass` costs <= 5 ms more than the cell `pass`
(graph rendering excluded by `--no-graph`), (1) one cell at a time with the store writer idle,
as when a person runs cells, and (2) back to back, as in "Run All", where the writer thread is
still building the previous runs' PROV documents and Parquet files while the next cell runs.
Reports (3), with no target, how long the writer then needs to finish one run in the background.

Run alone: `python benchmarks/bench_provrun.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report
from _shell import drain_writer, isolated_shell, load_extension

PROVRUN_TARGET_MS = 5.0
PROVRUN = "%%provrun --no-graph --no-live\npass\n"
PLAIN = "pass\n"
ROUNDS = 40  # one-at-a-time cells per arm
BURST_ROUNDS = 16
BURST = 5  # back-to-back cells per burst
MS = 1e3


def _run(shell: Any, source: str) -> float:
    """Run one cell as a kernel would (history on); seconds. Fails loudly if the cell fails."""
    start = time.perf_counter()
    result = shell.run_cell(source, store_history=True)
    elapsed = time.perf_counter() - start
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise BenchmarkError(f"cell {source!r} failed: {error!r}")
    return elapsed


def main() -> list[Result]:
    with isolated_shell() as shell:
        extension = load_extension(shell)
        for _ in range(3):  # warm-up: the writer imports prov and pyarrow on the first run
            _run(shell, PROVRUN)
            _run(shell, PLAIN)
        drain_writer(extension)

        drains: dict[str, list[float]] = {"provrun": [], "plain": []}

        def single(source: str, arm: str) -> float:
            drain_writer(extension)
            shell.display_pub.outputs.clear()
            elapsed = _run(shell, source)
            drains[arm].append(drain_writer(extension))
            return elapsed

        one = interleave(
            {
                "provrun": lambda: single(PROVRUN, "provrun"),
                "plain": lambda: single(PLAIN, "plain"),
            },
            ROUNDS,
        )

        def burst(source: str) -> float:
            drain_writer(extension)
            shell.display_pub.outputs.clear()
            return sum(_run(shell, source) for _ in range(BURST)) / BURST

        many = interleave(
            {"provrun": lambda: burst(PROVRUN), "plain": lambda: burst(PLAIN)}, BURST_ROUNDS
        )
        drain_writer(extension)

    return [
        checked(
            "%%provrun pass, one cell, writer idle",
            median(one["provrun"]) * MS,
            "ms",
            median(one["plain"]) * MS,
            PROVRUN_TARGET_MS,
            note=f"median of {ROUNDS}, interleaved with plain `pass` cells, history on",
        ),
        checked(
            f"%%provrun pass, {BURST} back to back",
            median(many["provrun"]) * MS,
            "ms",
            median(many["plain"]) * MS,
            PROVRUN_TARGET_MS,
            note=f"mean cell of a burst, median of {BURST_ROUNDS} bursts per arm",
        ),
        checked(
            "writer time to store one %%provrun",
            median(drains["provrun"]) * MS,
            "ms",
            median(drains["plain"]) * MS,
            None,
            note="wait for the writer after the cell (PROV-JSON + Parquet, off the cell's path)",
        ),
    ]


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
