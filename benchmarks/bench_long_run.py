"""A 24-hour `%%provrun` at 10 Hz, simulated with a fast clock: what memory and the journal
hold at the end, and how long recovering it after a crash takes.

Drives the real code path tick by tick: `Sampler._tick` (with the sampler module's clock
replaced by a simulated one and a host source that returns fixed-shape readings), the real
`Checkpointer` subscribed to it (a checkpoint every 2 simulated seconds), one `log_metric`
point per simulated second, and a real `StoreWriter` thread journaling into a temp store.
Then it reads the journal back as recovery does after a SIGKILL.

Figures: sample memory (rows kept; bytes of its lists and floats) against keeping every tick (bytes
per row measured here x 864,000); journal size against journaling every tick (bytes per
journaled row measured here x 864,000); recovery time. The journal keeps old samples at the
resolution they had when they were journaled, so it grows with the log of the duration, not
linearly; the run's PROV document states the downsampling factor.

Run alone: `python benchmarks/bench_long_run.py [--hours H]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import Result, checked, print_report

INTERVAL_S = 0.1
MIB = 1 / 2**20


class _Host:
    """Readings of the shape the real host reader returns, without /proc (cheap per tick)."""

    def __init__(self) -> None:
        from jupyter_prov4ml.records import HostSample

        self._sample = HostSample

    def prime(self) -> None:
        return None

    def read(self, elapsed_s: float) -> Any:
        tick = int(elapsed_s * 10)
        return self._sample(
            elapsed_s,
            95.0 + tick % 13,
            2**30 + (tick & 0xFFFF) * 4096,
            60.0 + tick % 17,
            2**33 + (tick & 0xFFFF) * 4096,
        )


def columns_bytes(samples: Any) -> int:
    """What a SampleColumns holds: its lists and one float object per value."""
    return sum(
        sys.getsizeof(values) + sys.getsizeof(0.5) * len(values)
        for values in samples.columns.values()
    )


def simulate(hours: float, store_root: Path) -> dict[str, Any]:
    """Run the simulated cell; what was kept, journaled and recovered."""
    from jupyter_prov4ml.capture.progress import Checkpointer
    from jupyter_prov4ml.capture.recorder import OpenWindow
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware import sampler as sampling
    from jupyter_prov4ml.hardware.gpu import NullGpu
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.records import SessionInfo
    from jupyter_prov4ml.store.journal import read_journal
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    ticks = round(hours * 3600 / INTERVAL_S)
    clock = types.SimpleNamespace(now=0.0)
    real_time = sampling.time
    sampling.time = types.SimpleNamespace(perf_counter=lambda: clock.now)  # type: ignore[assignment]
    store = Store(store_root)
    session = SessionInfo("bench", "me", time.time(), (), "host", "linux", "cpu", 2, 1)
    writer = StoreWriter(store, session, Notices())
    writer.start()
    window = OpenWindow("bench-run", "%%provrun\ntrain()", "0" * 64, None, time.time(), 0, 0)
    writer.opened(window, "provrun", {"interval_s": INTERVAL_S})
    try:
        sampler = sampling.Sampler(_Host(), NullGpu("simulated: no GPU"), Notices(), INTERVAL_S)
        sampler._t0 = 0.0  # started by hand: the clock is simulated, no thread
        capture = RunCapture(0)
        checkpointer = Checkpointer(
            window.run_id, lambda: sampler.samples, capture, writer.progress, 0
        )
        sampler.subscribe(checkpointer.on_tick)
        started = time.perf_counter()
        for tick in range(1, ticks + 1):
            clock.now = tick * INTERVAL_S
            sampler._tick()
            if tick % 10 == 0:
                capture.metrics.log("loss", 1.0 / tick, tick // 10, "training")
            if tick % 36_000 == 0:
                writer.flush(60)  # keep the queue short, as the real writer's period does
        simulated_s = time.perf_counter() - started
        assert writer.flush(120)
    finally:
        sampling.time = real_time  # type: ignore[assignment]
    journal = store.journal_path(session.session_id)
    journal_bytes = journal.stat().st_size
    started = time.perf_counter()
    state = read_journal(journal, with_progress=True)
    recovery_s = time.perf_counter() - started
    progress = state.progress[window.run_id]
    writer.close()
    return {
        "ticks": ticks,
        "kept": len(sampler.samples),
        "factor": sampler.samples.downsample_factor,
        "memory_bytes": columns_bytes(sampler.samples),
        "journal_bytes": journal_bytes,
        "journaled_rows": len(progress.samples),
        "metric_points": len(progress.metrics) if progress.metrics else 0,
        "recovery_s": recovery_s,
        "simulated_s": simulated_s,
    }


def main(hours: float = 24.0) -> list[Result]:
    from jupyter_prov4ml.hardware.sampler import DEFAULT_CAPACITY

    with tempfile.TemporaryDirectory(prefix="prov4ml-longrun-") as tmp:
        # Per-row costs measured on a run short enough never to downsample.
        short = simulate(DEFAULT_CAPACITY * INTERVAL_S / 3600 / 2, Path(tmp) / "short")
        day = simulate(hours, Path(tmp) / "day")
    per_row_memory = short["memory_bytes"] / short["kept"]
    per_row_journal = short["journal_bytes"] / short["ticks"]
    label = f"{hours:g} h at 10 Hz ({day['ticks']:,} ticks)"
    return [
        checked(
            f"sample memory after {label}",
            day["memory_bytes"] * MIB,
            "MiB",
            per_row_memory * day["ticks"] * MIB,
            per_row_memory * DEFAULT_CAPACITY * 1.1 * MIB,
            target_is_overhead=False,
            note=(
                f"{day['kept']:,} samples kept, 1 per {day['factor']} ticks; baseline: every "
                f"tick kept ({per_row_memory:.0f} B/sample); target: one full buffer"
            ),
        ),
        checked(
            f"journal size after {label}",
            day["journal_bytes"] * MIB,
            "MiB",
            per_row_journal * day["ticks"] * MIB,
            None,
            target_is_overhead=False,
            note=(
                f"{day['journaled_rows']:,} sample rows and {day['metric_points']:,} metric "
                f"points journaled; baseline: every tick journaled "
                f"({per_row_journal:.0f} B/tick with its share of metrics)"
            ),
        ),
        checked(
            "recovering that run's journal",
            day["recovery_s"],
            "s",
            None,
            None,
            target_is_overhead=False,
            note=f"read_journal with progress; simulation itself took {day['simulated_s']:.1f} s",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    print_report(main(parser.parse_args().hours))
