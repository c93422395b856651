"""A long notebook session: is the per-cell overhead flat, and is the extension's memory bounded?

Runs `--cells` (default 10,000) cells that look like a notebook's in a real, isolated shell
(history on, front-end cell ids set): a run-all of a 17-cell notebook, then edit-and-rerun
windows, console cells without an id assigning to and reading a rotating set of variables,
function and class definitions, a `%who_ls` magic, repeated sources, and ~3 % failing cells
(tracebacks in IPython's Minimal mode: the verbose ones cost ~30 ms each, with jitter that
would swamp the means). Edited cells cycle through 4 versions, so the distinct sources (and
cells and names) stay bounded: whatever grows with the number of executions is the
extension's own doing.

Two phases, each in a fresh shell, after a warm-up session that is unloaded (so the measured
session starts cold, without one-off import costs):

1. Timed. Chunks of 20 cells are run with the extension's hooks and AST capture registered,
   and the same 20 cells again without them, the order alternating from chunk to chunk: the
   baseline is measured in the same run, over the same cells, at the same session length.
   The store writer thread waits during the timed cells and drains after each block, where
   its CPU time is read: the hooks' cost and the writer's are reported apart (the writer's
   competes for the GIL with cells only when it runs during them). Per block: the mean
   per-cell overhead, the median of the per-cell differences and the median per-cell ratio;
   flatness is the last block's figure over the first block's. RSS after each block.
2. Memory. The same cells with the extension only, under `tracemalloc`: after each block, the
   writer is drained and the live memory allocated in `jupyter_prov4ml`'s own files is taken,
   with the sizes of the extension's containers (recorder/lineage/dataflow caches, writer
   queue, cells not yet in a PROV document), the block's traced peak and the traced total.

What it showed when written (2 vCPUs shared with other jobs, so bare cells took 0.6-3 ms):
the hooks add ~130-210 µs to a median cell, 19-25 % of it, the same in the last block as in
the first; every container stays at its size once all distinct cells were seen; the
package's live memory was a saw-tooth between ~0.1 and ~1 MiB (the cells then waiting for a
PROV document of every 2,000 cells, which took ~1.5-2 s of writer CPU and a ~47 MiB transient
peak). Plain cells' documents are no longer built ahead (they are made from the journal when
read), so that saw-tooth and that writer cost are gone; later RSS growth is IPython's own
history.

Run alone: `python benchmarks/bench_long_session.py [--cells N] [--block B] [--no-trace]`;
a full 10,000-cell run takes about three minutes on a 2-vCPU VM.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, print_report
from _shell import (
    drain_writer,
    isolated_shell,
    load_extension,
    set_hooks,
    unload_extension,
    writer_thread_cpu_s,
)

DEFAULT_CELLS = 10_000
CHUNK = 20  # cells per interleaved chunk: each is run hooked and bare, order alternating
FLATNESS_TARGET = 1.5  # last-block overhead <= 1.5x the first block's
SEED = 20240611
US = 1e6
KIB = 1 / 1024
MIB = 1 / (1024 * 1024)

# The notebook: (cell id, source). "@V" is the part a user edits: it takes one of 4 values.
NOTEBOOK: tuple[tuple[str, str], ...] = (
    ("imports", "import math\nimport collections\n"),
    ("config", "N = @V0 + 40\nseed = 7\nlr = 0.0@V1\n"),
    ("load", "data = [((i * seed) % 97) / 97 for i in range(N)]\n"),
    ("mean-def", "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n"),
    ("mean", "m = mean(data)\nm\n"),
    ("scale-def", "def scale(xs, k=2.0):\n    return [x * k for x in xs]\n"),
    ("scale", "scaled = scale(data, @V.5)\nlen(scaled)\n"),
    ("hist", "hist = collections.Counter(int(x * 10) for x in scaled)\n"),
    ("top", "top = sorted(hist.items())[:3]\ntop\n"),
    ("bias", "bias = 0.@V\n"),
    (
        "model-def",
        "class Model:\n    def __init__(self, w):\n        self.w = w\n\n"
        "    def predict(self, x):\n        return self.w * x + bias\n",
    ),
    ("model", "model = Model(m)\npred = [model.predict(x) for x in data[:20]]\n"),
    ("loss", "loss = sum((p - t) ** 2 for p, t in zip(pred, data)) / len(pred)\nloss\n"),
    ("train", "for step in range(5):\n    model.w -= lr * (loss - step * 0.01)\nw = model.w\n"),
    (
        "report",
        "results = {'loss': loss, 'm': m, 'w': w, 'n': N}\n"
        "summary = ', '.join(f'{k}={v:.3g}' for k, v in results.items())\n",
    ),
    ("scratch", "tmp = [math.sqrt(x) for x in data[:10]]\nbest = max(tmp) * @V\ndel tmp\n"),
    ("names", "names = %who_ls\nlen(names)\n"),
)
# Cells that fail: a division by zero and a typo, with their notebook ids.
FAILING: tuple[tuple[str, str], ...] = (
    ("ratio", "ratio = loss / (N - N)\n"),
    ("typo", "value = undefined_variable + 1\n"),
)
CONSOLE_VARIABLES = 12  # x0 .. x11, assigned and read by cells sent without an id
CONSOLE_INIT = " = ".join(f"x{i}" for i in range(CONSOLE_VARIABLES)) + " = 0\n"


def notebook_session(cells: int, seed: int = SEED) -> list[tuple[str, str | None]]:
    """`cells` (source, cell id) pairs as a notebook session sends them; deterministic.

    A run-all first; then, at random, edit-and-rerun windows of 1-5 cells (edits pick one of
    4 versions), console cells (no id) over `x0`..`x11`, a failing cell, or another run-all.
    """
    rng = random.Random(seed)
    versions = dict.fromkeys((cell_id for cell_id, _ in NOTEBOOK), 1)
    session: list[tuple[str, str | None]] = [(CONSOLE_INIT, None)]

    def emit(index: int) -> None:
        cell_id, template = NOTEBOOK[index]
        session.append((template.replace("@V", str(versions[cell_id])), cell_id))

    for index in range(len(NOTEBOOK)):
        emit(index)
    while len(session) < cells:
        draw = rng.random()
        if draw < 0.03:
            for index in range(len(NOTEBOOK)):
                emit(index)
        elif draw < 0.33:
            a = rng.randrange(CONSOLE_VARIABLES)
            b = (a - 1) % CONSOLE_VARIABLES
            source = f"x{a} = x{b} + len(data)\n" if draw < 0.2 else f"y = x{a} * 2\ny\n"
            session.append((source, None))
        elif draw < 0.36:
            cell_id, source = rng.choice(FAILING)
            session.append((source, cell_id))
        else:
            start = rng.randrange(len(NOTEBOOK))
            cell_id, template = NOTEBOOK[start]
            if "@V" in template and rng.random() < 0.5:
                versions[cell_id] = rng.randrange(1, 5)
            for index in range(start, min(start + rng.randint(1, 5), len(NOTEBOOK))):
                emit(index)
    return session[:cells]


class _NullWriter(io.TextIOBase):
    """Where the cells' displayed values and tracebacks go: nowhere (both arms alike)."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _quiet(notices: io.StringIO) -> Iterator[None]:
    """Outputs and tracebacks dropped; stderr (where the extension's notices go) kept."""
    with contextlib.redirect_stdout(_NullWriter()), contextlib.redirect_stderr(notices):
        yield


def _arm(shell: Any, extension: Any, on: bool) -> None:
    """The extension's hooks and its tree capture (a wrapper of the shell compiler's
    `ast_parse`) in place (on) or not (off); its state kept."""
    set_hooks(shell, extension, on)
    trees = extension.recorder.trees
    attached = "ast_parse" in vars(shell.compile)
    if on and not attached:
        trees.attach(shell.compile)
    elif not on and attached:
        trees.detach()


def extension_sizes(extension: Any) -> dict[str, int]:
    """Sizes of the extension's containers (-1 where one is no longer found under that name)."""

    def size(owner: Any, *path: str) -> int:
        for name in path:
            owner = getattr(owner, name, None)
            if owner is None:
                return -1
        return len(owner)

    recorder, writer = extension.recorder, extension.writer
    lineage = recorder.lineage
    cells = getattr(lineage, "cells", {})
    return {
        "dataflow": size(recorder, "dataflow"),
        "lineage cells": size(lineage, "cells"),
        "read links": sum(len(getattr(cell, "read_from", ())) for cell in cells.values()),
        "last binder": size(lineage, "last_binder"),
        "binders": size(lineage, "_binders"),
        "bound ids": size(lineage, "_bound_ids"),
        "writer pending": size(writer, "_pending"),
        "undocumented": size(writer, "_undocumented"),
        "notices said": size(extension, "notices", "_said"),
    }


def rss_bytes() -> int:
    """Resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class TimedBlock:
    """One block of phase 1: per-cell seconds, each cell run hooked and bare."""

    first_cell: int
    hooked_s: list[float]
    bare_s: list[float]
    writer_cpu_s: float | None
    rss_bytes: int

    @property
    def cells(self) -> int:
        return len(self.hooked_s)

    @property
    def mean_overhead_us(self) -> float:
        return (sum(self.hooked_s) - sum(self.bare_s)) / self.cells * US

    @property
    def median_overhead_us(self) -> float:
        return (
            statistics.median(h - b for h, b in zip(self.hooked_s, self.bare_s, strict=True)) * US
        )

    @property
    def relative_overhead(self) -> float:
        """The median of the per-cell hooked/bare ratios, less one: each pair ran within a few
        ms of each other, so unlike microseconds this is not moved by the VM slowing down or
        speeding up (other jobs) from block to block."""
        return statistics.median(h / b for h, b in zip(self.hooked_s, self.bare_s, strict=True)) - 1


@dataclass(frozen=True)
class MemoryBlock:
    """One block of phase 2: live memory allocated by the package's files, and its containers."""

    first_cell: int
    cells: int
    traced_bytes: int
    traced_blocks: int
    # the highest traced memory (all files) during the block and its drain, over its start
    peak_bytes: int
    # everything traced (IPython's history included), after the drain and a collection
    total_bytes: int
    sizes: dict[str, int]
    top_files: list[tuple[str, int]]


def _time_cells(run_cell: Callable[..., Any], cells: list[tuple[str, str | None]]) -> list[float]:
    clock = time.perf_counter
    times = []
    for source, cell_id in cells:
        start = clock()
        run_cell(source, store_history=True, cell_id=cell_id)
        times.append(clock() - start)
    return times


def _fresh_extension(shell: Any) -> Any:
    """Warm IPython's caches and the package's imports with a first load, recording a different
    session, then unload it and load a fresh one: the session under test starts cold, the way
    a kernel's does, without one-off import costs landing in its first block."""
    # IPython's verbose tracebacks take ~30 ms a failing cell, with jitter that would swamp
    # the means; the plain ones are what the extension sees too.
    shell.run_cell("%xmode Minimal", store_history=False)
    extension = load_extension(shell)
    for source, cell_id in notebook_session(300, seed=SEED + 1):
        shell.run_cell(source, store_history=True, cell_id=cell_id)
    drain_writer(extension)
    unload_extension(shell)
    return load_extension(shell)


def _writer_held(extension: Any) -> contextlib.AbstractContextManager[Any]:
    """While held, the writer thread waits instead of draining: the cells' timings are the
    hooks' own, and the block's writing is drained (and its CPU read) after the block."""
    lock = getattr(extension.writer, "_drain_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def timed_phase(session: list[tuple[str, str | None]], block: int, log: Any) -> list[TimedBlock]:
    """Phase 1: each chunk hooked and bare, alternating order; figures per block."""
    notices = io.StringIO()
    blocks: list[TimedBlock] = []
    with isolated_shell() as shell, _quiet(notices):
        extension = _fresh_extension(shell)
        gc.collect()
        for first in range(0, len(session), block):
            cells = session[first : first + block]
            hooked: list[float] = []
            bare: list[float] = []
            cpu_before = writer_thread_cpu_s()
            with _writer_held(extension):
                for chunk_start in range(0, len(cells), CHUNK):
                    chunk = cells[chunk_start : chunk_start + CHUNK]
                    even = (first + chunk_start) // CHUNK % 2 == 0
                    for on in (True, False) if even else (False, True):
                        _arm(shell, extension, on)
                        (hooked if on else bare).extend(_time_cells(shell.run_cell, chunk))
                _arm(shell, extension, True)
            drain_writer(extension)
            cpu_after = writer_thread_cpu_s()
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
            blocks.append(TimedBlock(first, hooked, bare, cpu, rss_bytes()))
            print(
                f"  timed: {first + len(cells):,} cells, "
                f"{blocks[-1].mean_overhead_us:+.0f} µs/cell",
                file=log,
                flush=True,
            )
    if "jupyter_prov4ml:" in notices.getvalue():
        print(f"notices during the timed phase:\n{notices.getvalue()[-2000:]}", file=log)
    return blocks


def _in_package(filename: str) -> bool:
    return "jupyter_prov4ml" in Path(filename).parts


def memory_phase(session: list[tuple[str, str | None]], block: int, log: Any) -> list[MemoryBlock]:
    """Phase 2: the extension alone, traced; what its own files allocated and still hold."""
    notices = io.StringIO()
    blocks: list[MemoryBlock] = []
    package = [tracemalloc.Filter(True, "*jupyter_prov4ml*")]
    with isolated_shell() as shell, _quiet(notices):
        extension = _fresh_extension(shell)
        gc.collect()
        tracemalloc.start(1)
        try:
            for first in range(0, len(session), block):
                cells = session[first : first + block]
                at_start = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                for source, cell_id in cells:
                    shell.run_cell(source, store_history=True, cell_id=cell_id)
                sizes = extension_sizes(extension)
                drain_writer(extension)
                peak = tracemalloc.get_traced_memory()[1] - at_start
                gc.collect()
                total = tracemalloc.get_traced_memory()[0]
                snapshot = tracemalloc.take_snapshot().filter_traces(package)
                stats = snapshot.statistics("filename")
                stats = [stat for stat in stats if _in_package(stat.traceback[0].filename)]
                blocks.append(
                    MemoryBlock(
                        first,
                        len(cells),
                        sum(stat.size for stat in stats),
                        sum(stat.count for stat in stats),
                        peak,
                        total,
                        sizes,
                        [(Path(s.traceback[0].filename).name, s.size) for s in stats[:4]],
                    )
                )
                print(
                    f"  traced: {first + len(cells):,} cells, "
                    f"{blocks[-1].traced_bytes * KIB:,.0f} KiB",
                    file=log,
                    flush=True,
                )
        finally:
            tracemalloc.stop()
    if "jupyter_prov4ml:" in notices.getvalue():
        print(f"notices during the memory phase:\n{notices.getvalue()[-2000:]}", file=log)
    return blocks


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _span(first: int, cells: int) -> str:
    return f"{first + 1:,}-{first + cells:,}"


def format_blocks(timed: list[TimedBlock], traced: list[MemoryBlock]) -> str:
    """The per-block tables: time and RSS from phase 1, memory and containers from phase 2."""
    timing = _table(
        [
            "cells",
            "bare µs",
            "hooked µs",
            "overhead µs",
            "median bare µs",
            "median diff µs",
            "hooked/bare",
            "writer µs",
            "RSS MiB",
        ],
        [
            [
                _span(b.first_cell, b.cells),
                f"{statistics.fmean(b.bare_s) * US:.0f}",
                f"{statistics.fmean(b.hooked_s) * US:.0f}",
                f"{b.mean_overhead_us:+.1f}",
                f"{statistics.median(b.bare_s) * US:.0f}",
                f"{b.median_overhead_us:+.1f}",
                f"{b.relative_overhead:+.1%}",
                "-" if b.writer_cpu_s is None else f"{b.writer_cpu_s / b.cells * US:.0f}",
                f"{b.rss_bytes * MIB:.1f}",
            ]
            for b in timed
        ],
    )
    out = [
        "per-cell time, means over the block ('median diff': median of the per-cell hooked - bare"
        " differences,",
        "'hooked/bare': median of the per-cell ratios, less one;"
        " 'writer': CPU of the store writer thread per recorded cell,",
        "drained after the block; RSS: after the drain):",
        timing,
    ]
    if traced:
        names = list(traced[0].sizes)
        memory = _table(
            ["cells", "traced KiB", "blocks", "peak +KiB", "all MiB", *names],
            [
                [
                    _span(b.first_cell, b.cells),
                    f"{b.traced_bytes * KIB:,.0f}",
                    f"{b.traced_blocks:,}",
                    f"{b.peak_bytes * KIB:,.0f}",
                    f"{b.total_bytes * MIB:.1f}",
                    *(str(b.sizes[name]) for name in names),
                ]
                for b in traced
            ],
        )
        top = ", ".join(f"{name} {size * KIB:,.0f} KiB" for name, size in traced[-1].top_files)
        out += [
            "",
            "extension memory after each block ('traced': live memory allocated in the package's",
            "files once the writer drained, in 'blocks' allocations; 'peak +': the highest traced",
            "memory of the whole process during the block, over its start; 'all': everything",
            "traced, IPython's history included; then container sizes in entries, 'writer",
            "pending' before the drain):",
            memory,
            f"largest at the end: {top}",
        ]
    return "\n".join(out)


def results(timed: list[TimedBlock], traced: list[MemoryBlock]) -> list[Result]:
    """Headline figures for the shared table."""
    first, last = timed[0], timed[-1]
    end = last.first_cell + last.cells

    def flatness(statistic: Callable[[TimedBlock], float], block: TimedBlock) -> float:
        return statistic(last) / statistic(block) if statistic(block) > 0 else float("inf")

    def mean(block: TimedBlock) -> float:
        return block.mean_overhead_us

    def median(block: TimedBlock) -> float:
        return block.median_overhead_us

    def relative(block: TimedBlock) -> float:
        return block.relative_overhead

    found = [
        checked(
            f"long session: cells {_span(first.first_cell, first.cells)}",
            statistics.fmean(first.hooked_s) * US,
            "µs",
            statistics.fmean(first.bare_s) * US,
            None,
            note="mean per cell of notebook-like cells, history on, hooked/bare chunks of "
            f"{CHUNK} alternating; the store writer waits during the timed cells",
        ),
        checked(
            f"long session: cells {_span(last.first_cell, last.cells)}",
            statistics.fmean(last.hooked_s) * US,
            "µs",
            statistics.fmean(last.bare_s) * US,
            None,
        ),
        checked(
            "long session: mean overhead, last/first block",
            flatness(mean, first),
            "x",
            None,
            None,
            note="the first block also pays the first analysis of each distinct cell; means "
            "carry the VM's multi-ms stalls",
        ),
        checked(
            "long session: median overhead, last/first block",
            flatness(median, first),
            "x",
            None,
            None,
            note="moves with the VM's speed, which other jobs change from block to block",
        ),
        checked(
            "long session: median overhead/bare, last/first",
            flatness(relative, first),
            "x",
            None,
            FLATNESS_TARGET,
            target_is_overhead=False,
            note="flat: the hooks cost no more, relative to a bare cell, late in a session",
        ),
    ]
    if len(timed) >= 3:
        found.append(
            checked(
                "long session: median overhead/bare, last/second",
                flatness(relative, timed[1]),
                "x",
                None,
                FLATNESS_TARGET,
                target_is_overhead=False,
            )
        )
    writer = [b.writer_cpu_s / b.cells * US for b in timed if b.writer_cpu_s is not None]
    if writer:
        found.append(
            checked(
                "long session: writer thread CPU per cell",
                statistics.fmean(writer),
                "µs",
                None,
                None,
                note="mean over the blocks",
            )
        )
    found.append(
        checked(
            f"long session: RSS after {end:,} cells",
            last.rss_bytes * MIB,
            "MiB",
            first.rss_bytes * MIB,
            None,
            note="baseline: RSS after the first block (IPython's own history grows too)",
        )
    )
    if traced:
        found += [
            checked(
                f"long session: extension memory after {end:,} cells",
                traced[-1].traced_bytes * KIB,
                "KiB",
                traced[0].traced_bytes * KIB,
                None,
                note="live tracemalloc bytes allocated in jupyter_prov4ml files, writer drained; "
                "baseline: after the first block",
            ),
            checked(
                "long session: highest transient memory of a block",
                max(b.peak_bytes for b in traced) * MIB,
                "MiB",
                None,
                None,
                note="traced peak over the block's start: the blocks that write a PROV cells "
                "document",
            ),
        ]
    return found


def main(cells: int = DEFAULT_CELLS, block: int | None = None, trace: bool = True) -> list[Result]:
    """Both phases over `cells` cells; prints the per-block tables, returns the headlines."""
    if cells < CHUNK:
        raise BenchmarkError(f"--cells must be at least {CHUNK}")
    block = block or max(CHUNK, min(1_000, cells // 5 // CHUNK * CHUNK))
    session = notebook_session(cells)
    distinct = len(set(session))
    print(
        f"long session: {cells:,} cells ({distinct} distinct source/id pairs), blocks of {block:,}",
        flush=True,
    )
    timed = timed_phase(session, block, sys.stdout)
    traced = memory_phase(session, block, sys.stdout) if trace else []
    print(format_blocks(timed, traced))
    return results(timed, traced)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=DEFAULT_CELLS, help="cells to run")
    parser.add_argument("--block", type=int, default=None, help="cells per reported block")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc phase")
    return parser.parse_args(argv)


if __name__ == "__main__":
    started = time.perf_counter()
    arguments = _arguments(sys.argv[1:])
    print_report(main(arguments.cells, arguments.block, not arguments.no_trace), started)
