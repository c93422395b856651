"""The sampler thread: reads the host and the GPUs at a fixed rate into bounded column buffers
and tells subscribers (the live view) about each tick. All periodic hardware reads happen here,
never in a cell hook."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jupyter_prov4ml.hardware.gpu import GpuReader, GpuSample, GpuUnavailable
from jupyter_prov4ml.hardware.process_tree import TreeSampler, TreeTick, is_process_column
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import HardwareSummary, HostSample, SeriesSummary

DEFAULT_INTERVAL_S = 0.1
# One hour at 10 Hz at full resolution; older samples are thinned so memory stays bounded
# however long the cell runs (a 24-hour cell keeps < 36k samples per column, not 864k).
DEFAULT_CAPACITY = 36_000
# A reader that keeps failing is switched off rather than retried at 10 Hz forever.
MAX_CONSECUTIVE_FAILURES = 3

_HOST_FIELDS = (
    "process_cpu_percent",
    "process_rss_bytes",
    "system_cpu_percent",
    "system_memory_used_bytes",
)
GPU_FIELDS = (
    "utilization_percent",
    "memory_utilization_percent",
    "memory_used_bytes",
    "power_w",
    "temperature_c",
    "sm_clock_mhz",
    "process_memory_bytes",
    "energy_mj",
)


class HostSource(Protocol):
    def prime(self) -> None: ...

    def read(self, elapsed_s: float) -> HostSample: ...


@dataclass(frozen=True, slots=True)
class Tick:
    """Everything read at one instant."""

    elapsed_s: float
    host: HostSample | None
    gpus: tuple[GpuSample, ...]
    # The kernel's process tree (a %%provrun), None where it is not read.
    tree: TreeTick | None = None

    def columns(self) -> dict[str, float]:
        values: dict[str, float] = {"elapsed_s": self.elapsed_s}
        if self.host is not None:
            for name in _HOST_FIELDS:
                values[name] = float(getattr(self.host, name))
        for gpu in self.gpus:
            for name in GPU_FIELDS:
                value = getattr(gpu, name)
                values[f"gpu{gpu.index}_{name}"] = math.nan if value is None else float(value)
            values.update(gpu.tree_columns())
        if self.tree is not None:
            values.update(self.tree.columns())
        return values


class SampleColumns:
    """Samples stored column-wise with a fixed capacity.

    When full, every other stored sample is dropped and only every `downsample_factor`-th new
    sample is kept, so the series stays evenly spaced at a coarser interval. A column that
    appears late (or a field that disappears) is padded with NaN so all columns stay aligned.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(2, capacity)
        self.downsample_factor = 1
        self._seen = 0
        self.columns: dict[str, list[float]] = {"elapsed_s": []}

    def __len__(self) -> int:
        return len(self.columns["elapsed_s"])

    def append(self, values: dict[str, float]) -> None:
        self._seen += 1
        if (self._seen - 1) % self.downsample_factor:
            return
        self.extend({name: (value,) for name, value in values.items()}, self.downsample_factor)
        if len(self) >= self.capacity:
            for name in self.columns:
                self.columns[name] = self.columns[name][::2]
            self.downsample_factor *= 2

    def extend(self, chunk: Mapping[str, Sequence[float]], downsample_factor: int) -> None:
        """Append rows as they are (no thinning; `append` thins): a column one side lacks is
        NaN-padded, so every column stays aligned with `elapsed_s`."""
        length, added = len(self), len(chunk["elapsed_s"])
        for name, values in chunk.items():
            column = self.columns.get(name)
            if column is None:
                column = self.columns[name] = [math.nan] * length
            column.extend(values)
        for column in self.columns.values():
            if len(column) == length:
                column.extend([math.nan] * added)
        self.downsample_factor = max(self.downsample_factor, downsample_factor)

    def copy(self) -> SampleColumns:
        twin = SampleColumns(self.capacity)
        twin.downsample_factor = self.downsample_factor
        twin.columns = {name: list(values) for name, values in list(self.columns.items())}
        return twin

    def column(self, name: str) -> list[float]:
        """A column's values, aligned with `elapsed_s`: all NaN for a field never read (a GPU
        lost before its first sample), so readers need not tell "absent" from "unread"."""
        found = self.columns.get(name)
        return found if found is not None else [math.nan] * len(self)

    def summary(self, interval_s: float) -> HardwareSummary:
        series = []
        for name, values in self.columns.items():
            # Per-process series stay in the samples file: a run's record (and its PROV
            # document) summarises the tree's totals, never one entry per process.
            if name == "elapsed_s" or name.endswith("_energy_mj") or is_process_column(name):
                continue
            summary = SeriesSummary.of(values)
            if summary is not None:
                series.append((name, summary))
        return HardwareSummary(len(self), interval_s, self.downsample_factor, tuple(series))


class Sampler:
    """Samples the host (and GPUs) every `interval_s` on a daemon thread until `stop()`."""

    def __init__(
        self,
        host: HostSource,
        gpu: GpuReader,
        notices: Notices,
        interval_s: float = DEFAULT_INTERVAL_S,
        capacity: int = DEFAULT_CAPACITY,
        tree: TreeSampler | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("the sampling interval must be positive")
        self.interval_s = interval_s
        self.samples = SampleColumns(capacity)
        self._host: HostSource | None = host
        self._gpu: GpuReader | None = gpu if gpu.available else None
        self._tree = tree
        self._notices = notices
        # (callback, what the user loses if it fails)
        self._subscribers: list[tuple[Callable[[Tick], None], str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._host_failures = 0
        self.latest: Tick | None = None

    def subscribe(
        self, callback: Callable[[Tick], None], lost: str = "the live view stopped updating"
    ) -> None:
        """Call `callback` after each tick (sampler thread); if it raises, it is dropped and
        the user told `lost` once."""
        self._subscribers.append((callback, lost))

    @property
    def t0_ns(self) -> int:
        """When sampling started, on the perf_counter clock (sample times are relative to it)."""
        return round(self._t0 * 1e9)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(
            target=self._run, name="jupyter-prov4ml-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> SampleColumns:
        """Stop after one last sample, so the series covers the whole window, and return it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                # A probe hung: stop listening to it and keep what was sampled so far.
                self._subscribers.clear()
                self.samples = self.samples.copy()
        return self.samples

    def _run(self) -> None:
        if self._host is not None:
            try:
                self._host.prime()
            # The sampler is a fault boundary: whatever a probe raises must not kill the
            # thread or reach the user's cell; it is reported once and that probe dropped.
            except Exception as error:  # noqa: BLE001
                self._notices.warn("sampler", f"host sampling unavailable ({error!r})")
                self._host = None
        if self._tree is not None:
            try:
                self._tree.prime()
            except Exception as error:  # noqa: BLE001 - see above
                self._tree_lost(error)
        # Deadlines are absolute so the rate does not drift by the cost of each tick; a tick
        # that overran moves on to the next deadline instead of bursting to catch up.
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
        elapsed_s = time.perf_counter() - self._t0
        host = self._read_host(elapsed_s)
        tree = self._read_tree()
        gpus = self._read_gpus(tree.reading.pids() if tree is not None else None)
        tick = Tick(elapsed_s, host, gpus, tree)
        self.latest = tick
        self.samples.append(tick.columns())
        for subscriber in tuple(self._subscribers):
            try:
                subscriber[0](tick)
            except Exception as error:  # noqa: BLE001 - a subscriber must not stop sampling
                self._notices.warn(f"subscriber:{subscriber[1]}", f"{subscriber[1]} ({error!r})")
                self._subscribers.remove(subscriber)

    def _read_host(self, elapsed_s: float) -> HostSample | None:
        if self._host is None:
            return None
        try:
            sample = self._host.read(elapsed_s)
        except Exception as error:  # noqa: BLE001 - see _run
            self._host_failures += 1
            if self._host_failures >= MAX_CONSECUTIVE_FAILURES:
                self._notices.warn("sampler", f"host sampling stopped after errors ({error!r})")
                self._host = None
            return None
        self._host_failures = 0
        return sample

    def _read_tree(self) -> TreeTick | None:
        if self._tree is None:
            return None
        try:
            return self._tree.tick()
        except Exception as error:  # noqa: BLE001 - see _run
            self._tree_lost(error)
            return None

    def _tree_lost(self, error: Exception) -> None:
        self._notices.warn(
            "process-tree",
            f"child processes are not sampled ({error!r}); the kernel's own figures are",
        )
        self._tree = None

    def _read_gpus(self, pids: frozenset[int] | None) -> tuple[GpuSample, ...]:
        if self._gpu is None:
            return ()
        try:
            return self._gpu.read(pids)
        except GpuUnavailable as lost:
            self._notices.warn("gpu", f"GPU sampling stopped: {lost}; the run is still saved")
        except Exception as error:  # noqa: BLE001 - see _run
            self._notices.warn("gpu", f"GPU sampling stopped after an error ({error!r})")
        self._gpu = None
        return ()
