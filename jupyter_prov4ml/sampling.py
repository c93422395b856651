"""The sampler thread: reads the host at a fixed rate into bounded column buffers and tells
subscribers (the live view) about each sample. All hardware reads happen here, never in a hook."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .notices import Notices
from .records import HostSample, HostSummary, SeriesSummary

DEFAULT_INTERVAL_S = 0.1
# One hour at 10 Hz at full resolution; older samples are thinned so memory stays bounded
# however long the cell runs (a 24-hour cell keeps ~36k samples, not 864k).
DEFAULT_CAPACITY = 36_000
# A reader that keeps failing is switched off rather than retried at 10 Hz forever.
MAX_CONSECUTIVE_FAILURES = 3


class SampleReader(Protocol):
    def prime(self) -> None: ...

    def read(self, elapsed_s: float) -> HostSample: ...


class SampleColumns:
    """Host samples stored column-wise with a fixed capacity.

    When full, every other stored sample is dropped and only every `downsample_factor`-th new
    sample is kept, so the series stays evenly spaced at a coarser interval.
    """

    FIELDS = (
        "elapsed_s",
        "process_cpu_percent",
        "process_rss_bytes",
        "system_cpu_percent",
        "system_memory_used_bytes",
    )

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(2, capacity)
        self.downsample_factor = 1
        self._seen = 0
        self.columns: dict[str, list[float]] = {name: [] for name in self.FIELDS}

    def __len__(self) -> int:
        return len(self.columns["elapsed_s"])

    def append(self, sample: HostSample) -> None:
        self._seen += 1
        if (self._seen - 1) % self.downsample_factor:
            return
        for name in self.FIELDS:
            self.columns[name].append(getattr(sample, name))
        if len(self) >= self.capacity:
            for name in self.FIELDS:
                self.columns[name] = self.columns[name][::2]
            self.downsample_factor *= 2

    def summary(self, interval_s: float) -> HostSummary:
        cols = self.columns
        return HostSummary(
            sample_count=len(self),
            interval_s=interval_s,
            downsample_factor=self.downsample_factor,
            process_cpu_percent=SeriesSummary.of(cols["process_cpu_percent"]),
            process_rss_bytes=SeriesSummary.of(cols["process_rss_bytes"]),
            system_cpu_percent=SeriesSummary.of(cols["system_cpu_percent"]),
            system_memory_used_bytes=SeriesSummary.of(cols["system_memory_used_bytes"]),
        )


class Sampler:
    """Samples `reader` every `interval_s` on a daemon thread until `stop()`."""

    def __init__(
        self,
        reader: SampleReader,
        notices: Notices,
        interval_s: float = DEFAULT_INTERVAL_S,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("the sampling interval must be positive")
        self.interval_s = interval_s
        self.samples = SampleColumns(capacity)
        self._reader = reader
        self._notices = notices
        self._subscribers: list[Callable[[HostSample], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._failures = 0
        self.latest: HostSample | None = None

    def subscribe(self, callback: Callable[[HostSample], None]) -> None:
        self._subscribers.append(callback)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="jupyter-prov4ml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> SampleColumns:
        """Stop, take one last sample so the series covers the whole window, and return it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return self.samples

    def _run(self) -> None:
        # Deadlines are absolute so the rate does not drift by the cost of each tick; a tick
        # that overran simply moves on to the next deadline instead of bursting to catch up.
        try:
            self._reader.prime()
        except Exception as error:  # noqa: BLE001 - see _tick
            self._notices.warn("sampler", f"host sampling unavailable ({error!r})")
            self._failures = MAX_CONSECUTIVE_FAILURES
        deadline = self._t0
        while True:
            deadline += self.interval_s
            now = time.perf_counter()
            if deadline < now:
                deadline = now + self.interval_s
            if self._stop.wait(deadline - now):
                break
            self._tick()
        self._tick()

    def _tick(self) -> None:
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            return
        try:
            sample = self._reader.read(time.perf_counter() - self._t0)
        # The sampler is a fault boundary: whatever a probe raises must not kill the thread
        # or reach the user's cell; it is reported once and the probe is given up on.
        except Exception as error:  # noqa: BLE001
            self._failures += 1
            if self._failures >= MAX_CONSECUTIVE_FAILURES:
                self._notices.warn(
                    "sampler", f"host sampling stopped after repeated errors ({error!r})"
                )
            return
        self._failures = 0
        self.latest = sample
        self.samples.append(sample)
        for callback in tuple(self._subscribers):
            try:
                callback(sample)
            except Exception as error:  # noqa: BLE001 - a view must not stop sampling
                self._notices.warn("subscriber", f"live view stopped updating ({error!r})")
                self._subscribers.remove(callback)
