"""Cost of the training-loop API (`log_metric`, `track`) inside a real `%%provrun` run, and of
saving what it collected, against plain Python measured in the same run.

Proves: (1) `log_metric("loss", x, step=i)` costs <= 1 µs per call (the median of 1,000-call
chunks, chunk time / 1,000) with a p99 <= 10 µs (over the chunks, and over single calls timed
with `perf_counter_ns` less the timer's own median cost, measured the same way), over 200,000
calls per `%%provrun` cell, next to `lst.append(x)` timed the same way; also with a numpy
float64 value and without a step. (2) Saving a run with 1 M metric points takes <= 0.5 s from
the end of the cell body until the store writer's `flush()` returns, into a `*.metrics.parquet`
of <= 8 MB; baseline: the same values written raw with `array('d').tofile` and fsynced, as the
store does. (3) A `track` step adds <= 50 µs per iteration to a trivial 20,000-iteration loop,
also with an inner tracked loop of 10 (counted into the step), and with the run-close cost of
turning steps into records (`finish_steps`, 10,000 steps) added. Reports with no target:
`encode_metrics` alone, the file size for float32-valued losses (a framework's
`loss.item()`), and how long the store writer takes to save a run of 2,000 steps.

The loops run in functions of this module called from the `%%provrun` cell body (so they are
compiled like any function; `log_metric` and `track` are the public API, imported in the
cell). Each timed cell checks that every point and step was recorded, so a silently failing
API cannot pass. The `track` cells drop their 100,000+ steps before the cell ends: the step
loop's hot path is what they measure; saving steps is measured on its own, at a size the
writer handles in about a second.

Run alone: `python benchmarks/bench_metrics.py`.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import BenchmarkError, Result, checked, interleave, median, print_report
from _shell import drain_writer, isolated_shell, load_extension

LOG_MEAN_TARGET_US = 1.0
LOG_P99_TARGET_US = 10.0
SAVE_TARGET_S = 0.5
SIZE_TARGET_MB = 8.0
TRACK_TARGET_US = 50.0

CALLS = 200_000  # log_metric calls per arm per cell
CHUNK = 1_000  # calls per timed chunk
LOG_ROUNDS = 3  # %%provrun cells
POINTS = 1_000_000
SAVE_ROUNDS = 3
ITERATIONS = 20_000  # trivial loop iterations per tracked loop
INNER = 10  # iterations of the inner tracked loop (the nested case has ITERATIONS / INNER steps)
TRACK_ROUNDS = 5  # interleaved loops per arm, in one %%provrun cell
FINISH_STEPS = 10_000
FINISH_ROUNDS = 3
WRITER_STEPS = 2_000
WRITER_ROUNDS = 2
NO_LIVE = "%%provrun --no-graph --no-live\n"
US = 1e6
MS = 1e3
MB = 1e-6


def _run(shell: Any, source: str) -> float:
    """Run one cell as a kernel would (history on); seconds. Fails loudly if the cell fails."""
    start = time.perf_counter()
    result = shell.run_cell(source, store_history=True)
    elapsed = time.perf_counter() - start
    if not result.success:
        error = result.error_before_exec or result.error_in_exec
        raise BenchmarkError(f"cell {source[:80]!r} failed: {error!r}")
    return elapsed


def _in_provrun(shell: Any, name: str, function: Callable[..., Any], api: str) -> Any:
    """Run `function(<api>)` as the body of a `%%provrun` cell, `api` imported from the package
    in the cell as a user would; returns what it returned."""
    shell.user_ns[f"_bench_{name}"] = function
    shell.display_pub.outputs.clear()
    _run(
        shell,
        f"{NO_LIVE}from jupyter_prov4ml import {api}\n_bench_out = _bench_{name}({api})\n",
    )
    shell.user_ns.pop(f"_bench_{name}")
    return shell.user_ns.pop("_bench_out")


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _loss_curve(count: int, float32: bool = False) -> list[float]:
    """A noisy decaying training loss, one value per step (float64, or float32 values as a
    framework's `loss.item()` gives them)."""
    import numpy as np

    steps = np.arange(count)
    noise = np.random.default_rng(0).standard_normal(count)
    loss = (0.1 + 2.2 * np.exp(-steps / (count / 6))) * (1 + 0.05 * noise)
    if float32:
        loss = loss.astype(np.float32).astype(np.float64)
    return [float(value) for value in loss]


# -- (1) log_metric per call ---------------------------------------------------------------


def _calls_in_cell(log_metric: Callable[..., None], extension: Any) -> dict[str, list[float]]:
    """The `%%provrun` body: chunks of each arm interleaved, then single timed calls; ns."""
    import numpy as np

    values = _loss_curve(CHUNK)
    np_values = list(np.array(values))
    clock = time.perf_counter_ns
    lst: list[float] = []
    positions = dict.fromkeys(("float", "numpy", "no step", "append"), 0)

    def chunk(arm: str) -> float:
        start = positions[arm]
        positions[arm] += CHUNK
        steps = range(start, start + CHUNK)
        begin = clock()
        if arm == "float":
            for i, v in zip(steps, values, strict=True):
                log_metric("loss", v, step=i)
        elif arm == "numpy":
            for i, v in zip(steps, np_values, strict=True):
                log_metric("loss_np", v, step=i)
        elif arm == "no step":
            for _i, v in zip(steps, values, strict=True):
                log_metric("loss_nostep", v)
        else:
            for _i, v in zip(steps, values, strict=True):
                lst.append(v)
        elapsed = clock() - begin
        lst.clear()
        return elapsed / CHUNK

    def singles(arm: str, out: list[float]) -> float:
        start = len(out)
        for i, v in zip(range(start, start + CHUNK), values, strict=True):
            if arm == "log_metric":
                begin = clock()
                log_metric("loss_single", v, step=i)
                end = clock()
            elif arm == "append":
                begin = clock()
                lst.append(v)
                end = clock()
            else:
                begin = clock()
                end = clock()
            out.append(end - begin)
        lst.clear()
        return 0.0

    samples = interleave({arm: functools.partial(chunk, arm) for arm in positions}, CALLS // CHUNK)
    single: dict[str, list[float]] = {"log_metric": [], "append": [], "timer": []}
    interleave(
        {arm: functools.partial(singles, arm, out) for arm, out in single.items()},
        CALLS // CHUNK,
    )
    recorded = len(extension.current_capture().metrics)
    if recorded != 4 * CALLS:
        raise BenchmarkError(f"log_metric recorded {recorded} points, not {4 * CALLS}")
    return {**samples, **{f"single {arm}": out for arm, out in single.items()}}


def _log_metric_cost(shell: Any, extension: Any) -> list[Result]:
    samples: dict[str, list[float]] = {}
    for _ in range(LOG_ROUNDS):
        drain_writer(extension)
        body = functools.partial(_calls_in_cell, extension=extension)
        for arm, values in _in_provrun(shell, "calls", body, "log_metric").items():
            samples.setdefault(arm, []).extend(values)
    drain_writer(extension)

    def us(arm: str) -> float:
        return median(samples[arm]) / 1e3

    timer = median(samples["single timer"])

    def p99_single(arm: str) -> float:
        return (_percentile(samples[f"single {arm}"], 99) - timer) / 1e3

    chunks = f"median of {LOG_ROUNDS} x {CALLS // CHUNK} interleaved {CHUNK}-call chunks"
    rows = [
        checked(
            'log_metric("loss", float, step=i) in %%provrun, mean per call',
            us("float"),
            "µs",
            us("append"),
            LOG_MEAN_TARGET_US,
            target_is_overhead=False,
            note=f"{chunks}; baseline: lst.append(x) in the same loop, same cell",
        )
    ]
    for arm, label in (("numpy", "np.float64 value, step=i"), ("no step", "float, no step")):
        rows.append(
            checked(
                f"log_metric({label}), mean per call",
                us(arm),
                "µs",
                us("append"),
                LOG_MEAN_TARGET_US,
                target_is_overhead=False,
            )
        )
    rows += [
        checked(
            "log_metric p99 of 1,000-call chunks, per call",
            _percentile(samples["float"], 99) / 1e3,
            "µs",
            _percentile(samples["append"], 99) / 1e3,
            LOG_P99_TARGET_US,
            target_is_overhead=False,
        ),
        checked(
            "log_metric p99 of single calls",
            p99_single("log_metric"),
            "µs",
            p99_single("append"),
            LOG_P99_TARGET_US,
            target_is_overhead=False,
            note=(
                f"{LOG_ROUNDS * CALLS:,} calls each timed with perf_counter_ns, less the "
                f"timer's median cost ({timer:.0f} ns, two back-to-back reads); "
                f"median single call {(median(samples['single log_metric']) - timer) / 1e3:.2f} "
                "µs; baseline: lst.append(x) timed the same way"
            ),
        ),
    ]
    return rows


# -- (2) saving 1 M points -----------------------------------------------------------------


def _tofile(path: Path, values: array[float]) -> float:
    """Seconds to write `values` raw (8 bytes each) and fsync, as the store's writes are."""
    start = time.perf_counter()
    with path.open("wb") as out:
        values.tofile(out)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - start


def _metric_log(values: list[float]) -> Any:
    """A run's MetricLog holding `values` as one series, logged one by one (real times)."""
    from jupyter_prov4ml.capture.metrics import MetricLog

    log = MetricLog()
    for step, value in enumerate(values):
        log.log("loss", value, step, "training")
    return log


def _encode_cost(values: list[float], raw: array[float], raw_path: Path) -> tuple[float, float]:
    """Medians: seconds `encode_metrics` takes for `values`, and `_tofile` of `raw`."""
    from jupyter_prov4ml.store.series_files import encode_metrics

    metrics = _metric_log(values)

    def encode() -> float:
        start = time.perf_counter()
        encode_metrics(metrics)
        return time.perf_counter() - start

    times = interleave({"encode": encode, "tofile": lambda: _tofile(raw_path, raw)}, SAVE_ROUNDS)
    return median(times["encode"]), median(times["tofile"])


def _encoded_size(values: list[float]) -> int:
    from jupyter_prov4ml.store.series_files import encode_metrics

    return len(encode_metrics(_metric_log(values))[0])


def _save_cost(shell: Any, extension: Any) -> list[Result]:
    values = _loss_curve(POINTS)
    raw = array("d", values)
    raw_path = Path.cwd() / "raw-values.bin"
    root = Path(extension.store.root)
    shell.user_ns["_bench_values"] = values
    cell = (
        f"{NO_LIVE}import time\nfrom jupyter_prov4ml import log_metric\n"
        "for _bench_i, _bench_v in enumerate(_bench_values):\n"
        "    log_metric('loss', _bench_v, step=_bench_i)\n"
        "_bench_end = time.perf_counter()\n"
    )
    sizes: list[int] = []
    returns: list[float] = []

    def save() -> float:
        drain_writer(extension)
        before = set(root.rglob("*.metrics.parquet"))
        shell.display_pub.outputs.clear()
        _run(shell, cell)
        returned = time.perf_counter()
        if not extension.writer.flush():
            raise BenchmarkError("the store writer did not finish saving within 10 s")
        done = time.perf_counter()
        end = shell.user_ns.pop("_bench_end")
        returns.append(returned - end)
        new = set(root.rglob("*.metrics.parquet")) - before
        if len(new) != 1:
            raise BenchmarkError(f"expected one new metrics file, found {len(new)}")
        sizes.append(new.pop().stat().st_size)
        return done - end

    samples = interleave({"save": save, "tofile": lambda: _tofile(raw_path, raw)}, SAVE_ROUNDS)
    shell.user_ns.pop("_bench_values")
    raw_size = raw_path.stat().st_size

    encoded = _encode_cost(values, raw, raw_path)
    float32_size = _encoded_size(_loss_curve(POINTS, float32=True))
    raw_path.unlink()

    return [
        checked(
            f"save a run of {POINTS:,} metric points",
            median(samples["save"]),
            "s",
            median(samples["tofile"]),
            SAVE_TARGET_S,
            target_is_overhead=False,
            note=(
                f"cell body end -> writer.flush() returns, median of {SAVE_ROUNDS} "
                f"(of which the cell's own return {median(returns) * MS:.0f} ms); float64 noisy "
                "decaying loss; baseline: array('d').tofile + fsync of the same values"
            ),
        ),
        checked(
            f"encode_metrics, {POINTS:,} points",
            encoded[0],
            "s",
            encoded[1],
            None,
            note="Parquet (zstd) bytes + summaries, in memory; baseline: tofile + fsync",
        ),
        checked(
            f"*.metrics.parquet size, {POINTS:,} points",
            median(sizes) * MB,
            "MB",
            raw_size * MB,
            SIZE_TARGET_MB,
            target_is_overhead=False,
            note="values, steps, times; baseline: the values alone, raw float64",
        ),
        checked(
            f"metrics Parquet size, {POINTS:,} float32-valued points",
            float32_size * MB,
            "MB",
            raw_size * MB,
            None,
            note="the same curve rounded to float32, as `loss.item()` on a float32 tensor gives",
        ),
    ]


# -- (3) track -----------------------------------------------------------------------------


def _loops_in_cell(track: Callable[..., Any], extension: Any) -> dict[str, list[float]]:
    """The `%%provrun` body: plain and tracked loops, interleaved; seconds per loop."""
    clock = time.perf_counter
    outer = ITERATIONS // INNER

    def plain() -> float:
        start = clock()
        for _ in range(ITERATIONS):
            pass
        return clock() - start

    def tracked() -> float:
        start = clock()
        for _ in track(range(ITERATIONS)):
            pass
        return clock() - start

    def plain_nested() -> float:
        start = clock()
        for _ in range(outer):
            for _ in range(INNER):
                pass
        return clock() - start

    def tracked_nested() -> float:
        start = clock()
        for _ in track(range(outer)):
            for _ in track(range(INNER), name="batch"):
                pass
        return clock() - start

    samples = interleave(
        {
            "plain": plain,
            "tracked": tracked,
            "plain nested": plain_nested,
            "tracked nested": tracked_nested,
        },
        TRACK_ROUNDS,
    )
    steps = extension.current_capture().loops.steps
    expected = TRACK_ROUNDS * (ITERATIONS + outer)
    if len(steps) != expected or dict(steps[-1].inner_iterations) != {"batch": INNER}:
        raise BenchmarkError(f"track recorded {len(steps)} steps, not {expected}")
    steps.clear()  # see the module docstring: saving steps is measured on its own
    return samples


def _finish_cost() -> tuple[float, float]:
    """Seconds `finish_steps` takes for FINISH_STEPS steps, with and without hardware samples
    (one per step, as with 100 ms steps at 10 Hz), two metrics logged per step."""
    from jupyter_prov4ml.capture.run_capture import RunCapture, StepContext, finish_steps
    from jupyter_prov4ml.hardware.sampler import SampleColumns, Tick
    from jupyter_prov4ml.records import HostSample
    from jupyter_prov4ml.settings import EnergyConfig

    t0_ns = time.perf_counter_ns()
    capture = RunCapture(t0_ns)
    for step in capture.loops.track(range(FINISH_STEPS), "epoch", None):
        capture.metrics.log("loss", 1.0 / (step + 1), step, "training")
        capture.metrics.log("accuracy", 1.0 - 1.0 / (step + 2), step, "validation")
    span_s = (time.perf_counter_ns() - t0_ns) / 1e9
    samples = SampleColumns()
    for index in range(FINISH_STEPS):
        elapsed = span_s * (index + 0.5) / FINISH_STEPS
        host = HostSample(elapsed, 95.0 + index % 7, 2**30 + index, 60.0, 2**33 + index)
        samples.append(Tick(elapsed, host, ()).columns())
    energy = EnergyConfig()

    def run(with_samples: bool) -> float:
        context = StepContext(samples if with_samples else None, t0_ns, 0, energy)
        start = time.perf_counter()
        steps = finish_steps(capture, context)
        elapsed = time.perf_counter() - start
        if steps.total != FINISH_STEPS:
            raise BenchmarkError(f"finish_steps gave {steps.total} steps, not {FINISH_STEPS}")
        return elapsed

    times = interleave(
        {"samples": lambda: run(True), "no samples": lambda: run(False)}, FINISH_ROUNDS
    )
    return median(times["samples"]), median(times["no samples"])


def _writer_cost(shell: Any, extension: Any) -> tuple[float, float, int, int]:
    """Seconds the store writer takes to save a run of WRITER_STEPS tracked steps and the
    same loop untracked, and the two runs' PROV-JSON sizes."""
    root = Path(extension.store.root)

    def save(loop: str) -> float:
        drain_writer(extension)
        shell.display_pub.outputs.clear()
        _run(shell, f"{NO_LIVE}from jupyter_prov4ml import track\nfor _ in {loop}: pass\n")
        return drain_writer(extension)

    before = {path: path.stat().st_size for path in root.rglob("*.prov.json")}
    times = interleave(
        {
            "tracked": lambda: save(f"track(range({WRITER_STEPS}))"),
            "plain": lambda: save(f"range({WRITER_STEPS})"),
        },
        WRITER_ROUNDS,
    )
    documents = sorted(
        path.stat().st_size for path in root.rglob("*.prov.json") if path not in before
    )
    return median(times["tracked"]), median(times["plain"]), documents[-1], documents[0]


def _track_cost(shell: Any, extension: Any) -> list[Result]:
    drain_writer(extension)
    body = functools.partial(_loops_in_cell, extension=extension)
    samples = _in_provrun(shell, "loops", body, "track")
    drain_writer(extension)
    finish, finish_bare = _finish_cost()
    writer, writer_plain, document, document_plain = _writer_cost(shell, extension)

    def per_iteration(arm: str, count: int) -> float:
        return median(samples[arm]) / count * US

    step = per_iteration("tracked", ITERATIONS)
    plain = per_iteration("plain", ITERATIONS)
    outer = ITERATIONS // INNER
    finish_per_step = finish / FINISH_STEPS * US
    loops = f"{TRACK_ROUNDS} interleaved loops per arm in one %%provrun cell"
    return [
        checked(
            f"track step, {ITERATIONS:,}-iteration trivial loop",
            step,
            "µs",
            plain,
            TRACK_TARGET_US,
            note=f"per iteration; {loops}; baseline: `for i in range(n)`",
        ),
        checked(
            f"track step with an inner tracked loop of {INNER}",
            per_iteration("tracked nested", outer),
            "µs",
            per_iteration("plain nested", outer),
            TRACK_TARGET_US,
            note=f"per outer iteration ({outer:,} steps, {INNER} inner iterations counted in each)",
        ),
        checked(
            f"finish_steps at run close, {FINISH_STEPS:,} steps",
            finish * MS,
            "ms",
            finish_bare * MS,
            None,
            note=(
                f"{finish_per_step:.1f} µs/step with one 10 Hz sample per step and 2 metrics; "
                "baseline: the same steps without hardware samples"
            ),
        ),
        checked(
            "track step + its finish_steps at close",
            step + finish_per_step,
            "µs",
            plain,
            TRACK_TARGET_US,
            note="hot-path overhead per iteration plus finish_steps per step (main thread)",
        ),
        checked(
            f"writer: save a run of {WRITER_STEPS:,} tracked steps",
            writer * MS,
            "ms",
            writer_plain * MS,
            None,
            note=(
                f"background thread; {(writer - writer_plain) / WRITER_STEPS * MS:.2f} ms/step, "
                f"PROV-JSON {(document - document_plain) / WRITER_STEPS / 1024:.1f} KiB/step; "
                f"baseline: the same loop untracked; median of {WRITER_ROUNDS}"
            ),
        ),
    ]


def main() -> list[Result]:
    with isolated_shell() as shell:
        extension = load_extension(shell)
        for _ in range(2):  # warm-up: the writer imports prov and pyarrow on the first run
            _run(shell, f"{NO_LIVE}from jupyter_prov4ml import log_metric\nlog_metric('x', 1.0)\n")
        drain_writer(extension)
        results = _log_metric_cost(shell, extension)
        results += _save_cost(shell, extension)
        results += _track_cost(shell, extension)
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    print_report(main(), started)
