"""Per-cell cost through a real ipykernel, bare vs `%load_ext jupyter_prov4ml`, same run.

Pairs of kernels are started with jupyter_client as a front end would (history on, each with
its own IPython profile and store folder); in each pair one loads the extension in its first
cell. Trivial cells (`x = N`, every source distinct, as in a notebook) are sent one at a time,
waiting for `idle` as nbclient does, in rounds that alternate bare/loaded (A B, B A, ...),
the pairs taking turns of 10 rounds. A cell's cost is the kernel-side span from its
`execute_input` header date to its `execute_reply` header date, both stamped by the kernel,
so the front end's own time is left out. Several pairs, because two identical bare kernels
are not equally fast: on the 2-vCPU VM one ran a median 23 µs (SE 10) slower than the other
over 1,500 interleaved cells, a bias of the process (its memory layout, where it is
scheduled) that one pair would add to the figure whole.

Proves: (1) the extension adds <= 60 µs to that span, both for
a typical cell (the median of the paired differences of adjacent rounds' medians, IQR and range
in the note) and on average (the mean over all cells, which also counts the cells the writer
thread stalls); (2) the store writer thread uses <= 20 µs of CPU per recorded cell (its CPU
clock, read in the kernel, from the end of the warm-up to the final flush: journal and index);
(3) the store holds <= 600 bytes per trivial cell once the kernel has shut down (journal + any
PROV documents + index: everything under the store folder). On a VM shared with other work,
(1) and (2) grow with the machine's load faster than a bare cell does: read them beside the
bare span of the first row (a quiet 2-vCPU VM: ~1.8 ms).
Reports, with no target: (4) the main thread's CPU per cell, paired by round like the span but
steadier on a busy VM, and the whole kernel's CPU per cell with its split by thread; (5) "Run
All": 300 cells sent at once, wall time of the burst, and (6) the cells right after it; (7) 500
cells past 2,000 recorded ones (where the writer once built a PROV document of the plain cells
while cells ran): their mean span and the slowest one.

`benchmarks/bench_hooks.py` stays the in-process floor (hooks on a bare `InteractiveShell`).

Run alone: `python benchmarks/bench_kernel_cells.py` (about 50 s on a 2-vCPU VM).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, median, print_report
from _shell import STORE_ENV, WRITER_THREAD
from jupyter_client.manager import KernelManager

SPAN_TARGET_US = 60.0
WRITER_TARGET_US = 20.0
BYTES_TARGET = 600.0
WARMUP_CELLS = 50
ROUNDS = 100  # alternating bare/loaded rounds of paced cells; short, so pairs are close in time
PAIRS = 3  # kernel pairs taking turns
# Rounds a pair runs before the next pair's turn (even: each pair's rounds still alternate A B,
# B A). A turn keeps cells as dense as one pair's were: spread one round per turn, a kernel
# idled twice as long between its rounds, and its writer met fewer cells per pass.
ROUNDS_PER_TURN = 10
CELLS_PER_ROUND = 30
BURST_ROUNDS = 3
BURST_CELLS = 300  # a "Run All": every request sent before the first reply is read
AFTER_BURST_CELLS = 40  # paced cells sent as soon as the burst's last cell is idle
# Up to here 1,970 recorded cells; the session is then taken past 2,000 and measured alone.
DOCUMENT_WINDOW = 500  # paced cells past LONG_SESSION_CELLS recorded ones
LONG_SESSION_CELLS = 2_000
DOCUMENT_CHUNK = 50
TIMEOUT_S = 120.0
MAIN_THREAD = "MainThread"  # the kernel's shell: where cells and their hooks run
US = 1e6
MS = 1e3

_EXTENSION = "get_ipython()._jupyter_prov4ml"
# Silent requests fire no pre/post_run_cell, so the probes below are not recorded cells.
_THREAD_CPU = (
    "{t.name: __import__('time').clock_gettime(__import__('time').pthread_getcpuclockid(t.ident))"
    " for t in __import__('threading').enumerate() if t.ident is not None}"
)
_PROCESS_CPU = "__import__('time').process_time()"
_DRAIN = f"{_EXTENSION}.writer.flush(timeout_s=60.0)"


class _Kernel:
    """One ipykernel and a blocking client; counts the recorded cells it ran."""

    def __init__(self, label: str, root: Path) -> None:
        self.label = label
        self.root = root
        self.store = root / "store"
        self.log = root / "kernel.log"
        (root / "cwd").mkdir(parents=True)
        env = {
            **os.environ,
            STORE_ENV: str(self.store),
            "IPYTHONDIR": str(root / "ipython"),  # a fresh profile and history database
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        self.manager = KernelManager(kernel_name="python3")
        self.manager.shutdown_wait_time = 60.0  # the extension writes its last documents at exit
        with self.log.open("wb") as log:
            self.manager.start_kernel(
                cwd=str(root / "cwd"), env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=60)
        except RuntimeError as error:
            self.client.stop_channels()
            self.manager.shutdown_kernel(now=True)
            raise BenchmarkError(f"{label} kernel did not start: {error}\n{self._log()}") from None
        self.cells = 0  # recorded cells: those sent by cell(), cells_paced() and burst()
        self._counter = 0

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def next_source(self) -> str:
        self._counter += 1
        return f"x = {self._counter}\n"

    def _collect(self, msg_ids: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
        """Iopub messages until the last request is idle; each request's execute_input, and
        each request's reply."""
        wanted = set(msg_ids)
        inputs: dict[str, dict] = {}
        last = msg_ids[-1]
        while True:
            message = self.client.get_iopub_msg(timeout=TIMEOUT_S)
            parent = message["parent_header"].get("msg_id")
            if parent not in wanted:
                continue
            kind = message["msg_type"]
            if kind == "execute_input":
                inputs[parent] = message
            elif (
                kind == "status"
                and parent == last
                and message["content"]["execution_state"] == "idle"
            ):
                break
        replies: dict[str, dict] = {}
        while len(replies) < len(msg_ids):
            reply = self.client.get_shell_msg(timeout=TIMEOUT_S)
            parent = reply["parent_header"].get("msg_id")
            if parent not in wanted:
                continue
            if reply["content"]["status"] != "ok":
                content = reply["content"]
                raise BenchmarkError(
                    f"{self.label} kernel: {content.get('ename')}: {content.get('evalue')}\n"
                    + "\n".join(content.get("traceback", []))[-2000:]
                )
            replies[parent] = reply
        return inputs, replies

    def cell(self, source: str) -> tuple[float, float]:
        """Run one recorded cell, waiting for idle; (kernel-side span, client round trip) s."""
        start = time.perf_counter()
        msg_id = self.client.execute(source, store_history=True)
        inputs, replies = self._collect([msg_id])
        round_trip = time.perf_counter() - start
        self.cells += 1
        return _span(inputs[msg_id], replies[msg_id]), round_trip

    def cells_paced(self, count: int) -> tuple[list[float], list[float]]:
        spans, trips = [], []
        for _ in range(count):
            span, trip = self.cell(self.next_source())
            spans.append(span)
            trips.append(trip)
        return spans, trips

    def burst(self, count: int) -> tuple[float, float]:
        """`count` cells sent at once, as "Run All" does; (client wall time to the last idle,
        kernel-side span from the first execute_input to the last execute_reply) s."""
        start = time.perf_counter()
        msg_ids = [
            self.client.execute(self.next_source(), store_history=True) for _ in range(count)
        ]
        inputs, replies = self._collect(msg_ids)
        wall = time.perf_counter() - start
        self.cells += count
        first = inputs[msg_ids[0]]["header"]["date"]
        last = replies[msg_ids[-1]]["header"]["date"]
        return wall, (last - first).total_seconds()

    def silent(self, code: str = "", **expressions: str) -> dict[str, Any]:
        """Run `code` silently (not a recorded cell) and evaluate `expressions` after it."""
        msg_id = self.client.execute(
            code, silent=True, store_history=False, user_expressions=expressions
        )
        _, replies = self._collect([msg_id])
        values = {}
        for name, answer in replies[msg_id]["content"]["user_expressions"].items():
            if answer.get("status") != "ok":
                raise BenchmarkError(
                    f"{self.label} kernel: {name}: {answer.get('ename')}: {answer.get('evalue')}"
                )
            values[name] = ast.literal_eval(answer["data"]["text/plain"])
        return values

    def load_extension(self) -> str:
        """`%load_ext jupyter_prov4ml` in a cell; the path of the package the kernel imported."""
        msg_id = self.client.execute("%load_ext jupyter_prov4ml", store_history=True)
        self._collect([msg_id])  # not a recorded cell: its hooks are not there yet
        answer = self.silent(
            loaded="hasattr(get_ipython(), '_jupyter_prov4ml')",
            path="__import__('jupyter_prov4ml').__file__",
        )
        if not answer["loaded"]:
            raise BenchmarkError(f"%load_ext jupyter_prov4ml did not load\n{self._log()}")
        return str(answer["path"])

    def writer_cpu(self) -> float:
        threads = self.cpu()[1]
        if WRITER_THREAD not in threads:
            raise BenchmarkError(f"no thread named {WRITER_THREAD!r} in the {self.label} kernel")
        return threads[WRITER_THREAD]

    def cpu(self) -> tuple[float, dict[str, float]]:
        """(process CPU s, CPU s of each Python thread by name)."""
        answer = self.silent(process=_PROCESS_CPU, threads=_THREAD_CPU)
        return answer["process"], answer["threads"]

    def drain(self) -> None:
        """Wait until the extension's writer has written everything queued."""
        answer = self.silent(done=_DRAIN)
        if not answer["done"]:
            raise BenchmarkError(f"{self.label} kernel: the store writer did not drain in 60 s")

    def shutdown(self) -> None:
        """A clean shutdown (the extension closes its writer at exit), killed if it hangs."""
        if not self.manager.has_kernel:
            return
        try:
            self.client.stop_channels()
        finally:
            self.manager.shutdown_kernel(now=False)


def _span(execute_input: dict, reply: dict) -> float:
    return (reply["header"]["date"] - execute_input["header"]["date"]).total_seconds()


@contextmanager
def _kernels(pairs: int) -> Iterator[list[dict[str, _Kernel]]]:
    with tempfile.TemporaryDirectory(prefix="prov4ml-bench-kernel-") as tmp, ExitStack() as stack:
        kernels = []
        for index in range(pairs):
            pair = {}
            for name in ("bare", "loaded"):
                pair[name] = _Kernel(name, Path(tmp) / f"{name}{index}")
                stack.callback(pair[name].shutdown)
            kernels.append(pair)
        yield kernels


def _store_bytes(store: Path) -> dict[str, int]:
    """Bytes under the store folder: journal, PROV documents, index, everything else."""
    parts = {"journal": 0, "PROV documents": 0, "index": 0, "other": 0}
    for path in store.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.name.endswith(".jsonl"):
            parts["journal"] += size
        elif path.name.endswith(".prov.json"):
            parts["PROV documents"] += size
        elif path.name.startswith("index."):
            parts["index"] += size
        else:
            parts["other"] += size
    return parts


def _spread(values: list[float], scale: float) -> str:
    """Median, interquartile range and range of paired differences, in `scale` units."""
    ordered = sorted(value * scale for value in values)
    low, _, high = statistics.quantiles(ordered, n=4)
    return (
        f"median {statistics.median(ordered):+.0f}, IQR {low:+.0f}..{high:+.0f}, "
        f"range {ordered[0]:+.0f}..{ordered[-1]:+.0f}"
    )


def _quantile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1]


def _thread_split(deltas: dict[str, float], cells: int) -> str:
    ranked = sorted(deltas.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {seconds / cells * US:.0f}" for name, seconds in ranked[:6])


def _paired(arm: dict[str, list[float]]) -> list[float]:
    return [loaded - bare for loaded, bare in zip(arm["loaded"], arm["bare"], strict=True)]


def _arms_in_turn(index: int) -> tuple[str, str]:
    """A B, B A, ...: drift in machine speed and order effects land on both arms alike."""
    return ("bare", "loaded") if index % 2 == 0 else ("loaded", "bare")


def _cpu(pairs: list[dict[str, _Kernel]], name: str) -> tuple[float, dict[str, float]]:
    """One arm's CPU over its kernels: the processes', and by thread name."""
    process, threads = 0.0, {}
    for pair in pairs:
        total, by_thread = pair[name].cpu()
        process += total
        for thread, seconds in by_thread.items():
            threads[thread] = threads.get(thread, 0.0) + seconds
    return process, threads


def _paced(pairs: list[dict[str, _Kernel]]) -> list[Result]:
    """Alternating rounds of paced cells: spans, round trips, CPU by thread, writer CPU."""
    span: dict[str, list[float]] = {"bare": [], "loaded": []}  # per round: median span,
    span_mean: dict[str, list[float]] = {"bare": [], "loaded": []}  # mean span,
    trip: dict[str, list[float]] = {"bare": [], "loaded": []}  # median round trip,
    main_cpu: dict[str, list[float]] = {"bare": [], "loaded": []}  # main thread's CPU/cell
    every: dict[str, list[float]] = {"bare": [], "loaded": []}  # every cell's span
    # CPU by thread over the whole phase: the writer's batches fall when they fall.
    arms = ("bare", "loaded")
    start_cpu = {name: _cpu(pairs, name) for name in arms}
    for index in range(ROUNDS):
        for name in _arms_in_turn(index):
            kernel = pairs[index // ROUNDS_PER_TURN % len(pairs)][name]
            _, threads_before = kernel.cpu()
            spans, trips = kernel.cells_paced(CELLS_PER_ROUND)
            _, threads_after = kernel.cpu()
            span[name].append(median(spans))
            span_mean[name].append(statistics.fmean(spans))
            trip[name].append(median(trips))
            main = threads_after[MAIN_THREAD] - threads_before[MAIN_THREAD]
            main_cpu[name].append(main / CELLS_PER_ROUND)
            every[name] += spans
    for pair in pairs:
        pair["loaded"].drain()  # what the writer still holds of these cells is their cost too
    end_cpu = {name: _cpu(pairs, name) for name in arms}
    cells = ROUNDS * CELLS_PER_ROUND
    process_cpu = {name: (end_cpu[name][0] - start_cpu[name][0]) / cells for name in arms}
    thread_cpu = {
        name: {
            thread: seconds - start_cpu[name][1].get(thread, 0.0)
            for thread, seconds in end_cpu[name][1].items()
        }
        for name in arms
    }
    steady = {name: median(values) for name, values in span.items()}
    paired, paired_mean = _paired(span), _paired(span_mean)
    return [
        checked(
            "kernel: trivial cell, execute_input -> reply",
            steady["loaded"] * US,
            "µs",
            steady["bare"] * US,
            None,
            note=(
                f"median of {ROUNDS} alternating rounds' medians, "
                f"{CELLS_PER_ROUND} paced cells each, {len(pairs)} kernel pairs in turn"
            ),
        ),
        checked(
            "kernel: span the extension adds, paired medians",
            median(paired) * US,
            "µs",
            None,
            SPAN_TARGET_US,
            target_is_overhead=False,
            note=(
                f"loaded - bare round medians, {len(paired)} adjacent pairs: {_spread(paired, US)}"
            ),
        ),
        checked(
            "kernel: span the extension adds, mean of all cells",
            statistics.fmean(paired_mean) * US,
            "µs",
            None,
            SPAN_TARGET_US,
            target_is_overhead=False,
            note=(
                "also counts cells the writer thread stalls (GIL), which medians leave out; "
                f"loaded - bare round means µs: {_spread(paired_mean, US)}; p99 of all cells "
                f"loaded {_quantile(every['loaded'], 99) * US:.0f}, bare "
                f"{_quantile(every['bare'], 99) * US:.0f} µs"
            ),
        ),
        checked(
            "kernel: trivial cell, client round trip",
            median(trip["loaded"]) * US,
            "µs",
            median(trip["bare"]) * US,
            None,
            note=f"send -> idle, as nbclient waits; paired µs: {_spread(_paired(trip), US)}",
        ),
        checked(
            "kernel: main-thread CPU per cell",
            median(main_cpu["loaded"]) * US,
            "µs",
            median(main_cpu["bare"]) * US,
            None,
            note=(
                "its CPU clock over each round, steadier than spans on a busy VM; paired "
                f"loaded - bare µs: {_spread(_paired(main_cpu), US)}"
            ),
        ),
        checked(
            "kernel: process CPU per cell, all threads",
            process_cpu["loaded"] * US,
            "µs",
            process_cpu["bare"] * US,
            None,
            note=(
                f"over the paced rounds, writer drained; µs/cell by thread, loaded: "
                f"{_thread_split(thread_cpu['loaded'], cells)}; bare: "
                f"{_thread_split(thread_cpu['bare'], cells)}"
            ),
        ),
    ]


def _run_all(arms: dict[str, _Kernel]) -> list[Result]:
    """Bursts of cells sent at once, then paced cells right after, alternating arms."""
    wall: dict[str, list[float]] = {"bare": [], "loaded": []}
    kernel_side: dict[str, list[float]] = {"bare": [], "loaded": []}
    after_mean: dict[str, list[float]] = {"bare": [], "loaded": []}
    after_max: dict[str, list[float]] = {"bare": [], "loaded": []}
    for index in range(BURST_ROUNDS):
        for name in _arms_in_turn(index):
            kernel = arms[name]
            burst_wall, burst_kernel = kernel.burst(BURST_CELLS)
            spans, _ = kernel.cells_paced(AFTER_BURST_CELLS)
            if name == "loaded":
                kernel.drain()  # no backlog left to slow the next bare burst
            wall[name].append(burst_wall)
            kernel_side[name].append(burst_kernel)
            after_mean[name].append(statistics.fmean(spans))
            after_max[name].append(max(spans))
    return [
        checked(
            f"kernel: Run All of {BURST_CELLS} cells, wall",
            median(wall["loaded"]) * MS,
            "ms",
            median(wall["bare"]) * MS,
            None,
            note=(
                f"all requests sent at once, to the last idle; {BURST_ROUNDS} rounds; kernel-side "
                f"first input -> last reply: loaded {median(kernel_side['loaded']) * MS:.0f}, "
                f"bare {median(kernel_side['bare']) * MS:.0f} ms"
            ),
        ),
        checked(
            f"kernel: {AFTER_BURST_CELLS} cells right after Run All, mean span",
            median(after_mean["loaded"]) * US,
            "µs",
            median(after_mean["bare"]) * US,
            None,
            note=(
                "paced, sent once the burst is idle; slowest cell loaded "
                f"{median(after_max['loaded']) * MS:.1f}, "
                f"bare {median(after_max['bare']) * MS:.1f} ms"
            ),
        ),
    ]


def _document(arms: dict[str, _Kernel]) -> tuple[list[Result], str]:
    """Paced cells past LONG_SESSION_CELLS recorded ones (where the writer once built a PROV
    document of the plain cells), loaded and bare in alternating chunks, so that a busy
    moment of the machine falls on both; (results, a note for the writer's CPU)."""
    bare, loaded = arms["bare"], arms["loaded"]
    every = LONG_SESSION_CELLS
    count = max(0, every - loaded.cells) + DOCUMENT_WINDOW
    writer_before = loaded.writer_cpu()
    loaded_spans: list[float] = []
    bare_spans: list[float] = []
    for start in range(0, count, DOCUMENT_CHUNK):
        chunk = min(DOCUMENT_CHUNK, count - start)
        loaded_spans += loaded.cells_paced(chunk)[0]
        bare_spans += bare.cells_paced(chunk)[0]
    loaded.drain()
    writer = loaded.writer_cpu() - writer_before
    result = checked(
        f"kernel: {count} cells past {every:,} recorded, mean span",
        statistics.fmean(loaded_spans) * US,
        "µs",
        statistics.fmean(bare_spans) * US,
        None,
        note=(
            f"paced, crossing {every:,} recorded cells (where a cells document was once built "
            "while cells ran; now none is built ahead); slowest "
            f"cell loaded {max(loaded_spans) * MS:.1f}, bare {max(bare_spans) * MS:.1f} ms; "
            f"writer CPU over these cells {writer * MS:.0f} ms"
        ),
    )
    return [result], f"the {count} cells past {every:,}: {writer / count * US:.0f}"


def main() -> list[Result]:
    with _kernels(PAIRS) as pairs:
        package = ", ".join(sorted({pair["loaded"].load_extension() for pair in pairs}))
        for pair in pairs:
            for kernel in pair.values():
                kernel.cells_paced(WARMUP_CELLS)
            pair["loaded"].drain()
        # The first pair also runs the phases after the paced rounds; the writer's CPU and the
        # store's bytes are its loaded kernel's, over all the cells it recorded.
        arms = pairs[0]
        loaded = arms["loaded"]
        writer_start = loaded.writer_cpu()  # the load, its recovery scan and the warm-up
        cells_start = loaded.cells
        results = _paced(pairs)
        writer_paced = (loaded.writer_cpu() - writer_start) / (loaded.cells - cells_start)
        results += _run_all(arms)
        document, document_note = _document(arms)
        results += document
        writer_before = loaded.writer_cpu()
        loaded.drain()  # what `%prov flush` and the kernel's exit write
        writer_end = loaded.writer_cpu()
        cells = loaded.cells
        loaded.shutdown()
        stored = _store_bytes(loaded.store)
        leftover = [path.name for path in loaded.store.rglob("writer.lock")]

    total_bytes = sum(stored.values())
    split = ", ".join(f"{part} {size / cells:.0f}" for part, size in stored.items())
    results[0] = dataclasses.replace(results[0], note=f"{results[0].note}; package {package}")
    results += [
        checked(
            "kernel: writer thread CPU per cell",
            (writer_end - writer_start) / cells * US,
            "µs",
            None,
            WRITER_TARGET_US,
            target_is_overhead=False,
            note=(
                f"its CPU clock from the warm-up's end to the final flush, / {cells:,} recorded "
                f"cells; µs/cell over the paced rounds {writer_paced * US:.0f}; {document_note}; "
                f"final flush {(writer_end - writer_before) * MS:.0f} ms"
            ),
        ),
        checked(
            "kernel: store bytes per trivial cell",
            total_bytes / cells,
            "B",
            None,
            BYTES_TARGET,
            target_is_overhead=False,
            note=(
                f"{total_bytes / 1024:,.0f} KiB after shutdown / {cells:,} recorded cells; "
                f"B/cell: {split}" + (f"; LEFT OVER: {leftover}" if leftover else "")
            ),
        ),
    ]
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
