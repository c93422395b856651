"""`%%provrun` with GPUs, through the magic, with a faithful fake at the pynvml boundary;
and the sampler and dashboard on their own."""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import closed_runs, deserialize_strict, displayed
from fake_nvml import FakeGpu, FakeNvml
from jupyter_prov4ml.hardware.gpu import NullGpu, open_gpu_probe
from jupyter_prov4ml.hardware.sampler import (
    MAX_CONSECUTIVE_FAILURES,
    SampleColumns,
    Sampler,
    Tick,
)
from jupyter_prov4ml.kernel import extension as _extension
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import HostSample


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """Two fake H100s behind the real GpuProbe; the extension opens them on load."""
    fake = FakeNvml(
        [
            FakeGpu(uuid="GPU-aaaaaaaa-0000-4000-8000-000000000000", power_mw=300_000),
            FakeGpu(uuid="GPU-bbbbbbbb-0000-4000-8000-000000000000", power_mw=100_000),
        ]
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(_extension, "open_gpu_probe", lambda: open_gpu_probe(nvml=fake))
    return fake


def run_and_flush(shell: Any, source: str) -> dict[str, Any]:
    result = shell.run_cell(source, store_history=True)
    assert result.success, result.error_in_exec
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=30)
    assert not shell._jupyter_prov4ml.notices.drain()
    return result


def test_banner_names_the_gpus(shell: Any, fake_gpus: FakeNvml, capsys: Any) -> None:
    """`%load_ext` names the GPUs it found."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    assert "2× NVIDIA H100 80GB HBM3" in capsys.readouterr().out


def test_gpu_energy_from_the_counter(shell: Any, fake_gpus: FakeNvml, store_dir: Path) -> None:
    """Each GPU's energy is the counter's delta (`measured-counter`); its utilisation, memory
    and power are summarised; CPU energy is an estimate; PROV carries each with its method."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.user_ns["nvml"] = fake_gpus
    run_and_flush(
        shell, "%%provrun --name gpu --no-graph\nimport time\ntime.sleep(0.3)\nnvml.advance(2.0)\n"
    )
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    readings = {r["device"]: r for r in run["energy"]["readings"]}
    assert readings["gpu0"]["method"] == "measured-counter"
    assert readings["gpu0"]["energy_j"] == pytest.approx(600.0)
    assert readings["gpu1"]["energy_j"] == pytest.approx(200.0)
    assert readings["cpu"]["method"] == "estimated"
    series = dict(run["hardware"]["series"])
    assert series["gpu0_utilization_percent"]["max"] == 50
    assert series["gpu1_power_w"]["mean"] == pytest.approx(100.0)
    assert series["gpu0_memory_used_bytes"]["max"] == 2 * 2**30
    (path,) = store_dir.glob("sessions/*/runs/*.prov.json")
    deserialize_strict(path)
    (activity,) = json.loads(path.read_text())["activity"].values()
    assert activity["p4m:energy_gpu0_method"] == "measured-counter"
    assert activity["p4m:energy_cpu_method"] == "estimated"
    assert "p4m:gpu1_power_w_max" in activity
    summary = [b["text/plain"] for b in displayed(shell) if "energy" in b.get("text/plain", "")]
    assert summary and "GPU0" in summary[0] and "measured-counter" in summary[0]


def test_without_a_counter_power_is_integrated(
    shell: Any, store_dir: Path, monkeypatch: Any
) -> None:
    """A GPU without the energy counter (pre-Volta) gets `integrated-power` from samples."""
    fake = FakeNvml([FakeGpu(has_energy_counter=False, power_mw=200_000)])
    monkeypatch.setattr(_extension, "open_gpu_probe", lambda: open_gpu_probe(nvml=fake))
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.user_ns["nvml"] = fake
    # The cell lasts until the sampler has read the power three times (not for an amount of
    # time), so the energy is integrated from samples at distinct times.
    run_and_flush(
        shell,
        "%%provrun --no-graph --interval 0.05\n"
        "assert nvml.wait_until(lambda n: n.calls.get('nvmlDeviceGetPowerUsage', 0) >= 3)\n",
    )
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    (gpu,) = [r for r in run["energy"]["readings"] if r["component"] == "gpu"]
    assert gpu["method"] == "integrated-power"
    assert gpu["detail"].startswith("trapezoid over")
    # 200 W over the energy window, which lies within the run's wall time.
    assert gpu["energy_j"] == pytest.approx(200.0 * gpu["duration_s"])
    assert 0 < gpu["duration_s"] <= run["wall_time_s"]


def test_gpu_lost_mid_run(shell: Any, fake_gpus: FakeNvml, store_dir: Path, capsys: Any) -> None:
    """A GPU that falls off the bus mid-run: one warning line, no traceback, the cell's result
    is unaffected and the run is saved with the CPU energy and the GPU samples taken so far."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.user_ns["nvml"] = fake_gpus
    # Each sample reads both GPUs' power once: at the 5th read since now, the third sample has
    # begun, so two whole samples were taken. Then the GPU falls off the bus, and the cell
    # goes on until the sampler has met the fault.
    two_samples = fake_gpus.calls.get("nvmlDeviceGetPowerUsage", 0) + 5
    result = shell.run_cell(
        "%%provrun --no-graph --interval 0.05\n"
        "assert nvml.wait_until(\n"
        f"    lambda n: n.calls.get('nvmlDeviceGetPowerUsage', 0) >= {two_samples}\n"
        ")\n"
        "nvml.fail_after(0)\n"
        "assert nvml.wait_until(lambda n: n.faults > 0)\n"
        "answer = 42\n",
        store_history=True,
    )
    assert result.success and shell.user_ns["answer"] == 42
    shell.run_cell("pass", store_history=True)
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=30)
    err = capsys.readouterr().err
    assert err.count("GPU sampling stopped") == 1 and "Traceback" not in err
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert run["status"] == "ok"
    assert any(r["device"] == "cpu" for r in run["energy"]["readings"])
    assert dict(run["hardware"]["series"])["gpu0_power_w"]["count"] >= 2


def test_sample_memory_is_bounded() -> None:
    """However many samples arrive, the columns stay under capacity and evenly thinned."""
    columns = SampleColumns(capacity=1000)
    for i in range(100_000):
        columns.append({"elapsed_s": i * 0.1, "x": float(i)})
    assert len(columns) < 1000
    assert columns.downsample_factor >= 64
    elapsed = columns.column("elapsed_s")
    steps = {round(b - a, 6) for a, b in itertools.pairwise(elapsed)}
    assert len(steps) == 1, "samples stay evenly spaced after thinning"
    assert columns.column("x")[0] == 0.0


def test_late_and_missing_columns_stay_aligned() -> None:
    """A column that appears late is padded with NaN; one that disappears keeps its length."""
    columns = SampleColumns()
    columns.append({"elapsed_s": 0.0, "a": 1.0})
    columns.append({"elapsed_s": 0.1, "a": 2.0, "b": 5.0})
    columns.append({"elapsed_s": 0.2, "b": 6.0})
    assert math.isnan(columns.column("b")[0]) and math.isnan(columns.column("a")[2])
    assert {len(c) for c in columns.columns.values()} == {3}


class _Host:
    def __init__(self) -> None:
        self.reads = 0

    def prime(self) -> None:
        return None

    def read(self, elapsed_s: float) -> HostSample:
        self.reads += 1
        return HostSample(elapsed_s, 100.0, 2**20, 50.0, 2**30)


_NVML_FAULTS = (
    "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_UNKNOWN",
    "NVML_ERROR_TIMEOUT",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_INSUFFICIENT_POWER",
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_IRQ_ISSUE",
)
_QUERIES = (
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetComputeRunningProcesses",
)


@pytest.mark.parametrize("seed", range(10))
def test_nvml_errors_at_random_points(
    shell: Any, fake_gpus: FakeNvml, store_dir: Path, capsys: Any, seed: int
) -> None:
    """NVML failing at a random moment of a run, with a random error, for every query from
    then on or for one query only: the cell's result is untouched, at most one line per GPU
    problem, and the run is saved with what was read before (its document reads back)."""
    import random

    import pynvml

    rng = random.Random(seed)
    shell.run_cell("%load_ext jupyter_prov4ml")
    code = getattr(pynvml, rng.choice(_NVML_FAULTS))
    if rng.random() < 0.5:
        fake_gpus.fail_after(rng.randrange(0, 120), code)
    else:
        fake_gpus.gpus[rng.randrange(2)].errors[rng.choice(_QUERIES)] = code
    shell.user_ns["nvml"] = fake_gpus
    # The cell runs until the injected fault has fired (the sampler meets it within a few
    # samples, at most 120 queries in), whatever the machine's speed.
    result = shell.run_cell(
        "%%provrun --no-graph --interval 0.02\n"
        "assert nvml.wait_until(lambda n: n.faults > 0)\n"
        "answer = 42\n",
        store_history=True,
    )
    assert result.success and shell.user_ns["answer"] == 42
    shell.run_cell("pass", store_history=True)
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=30)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 2, err
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert run["status"] == "ok"
    assert any(r["device"] == "cpu" for r in run["energy"]["readings"])


class _FakeClock:
    """The sampler module's `time` and `threading.Event` on a fake clock: waiting lets the
    time pass at once, so ticks follow the sampler's schedule, not the machine's speed. The
    stop event sets itself when the clock reaches `stop_after_s` past its start (as a
    `stop()` called then would)."""

    def __init__(self, stop_after_s: float) -> None:
        self.now = 1000.0
        self._stop_at = self.now + stop_after_s
        self._stopped = False

    def perf_counter(self) -> float:
        return self.now

    # -- the stop event --------------------------------------------------------------------

    def set(self) -> None:
        self._stopped = True

    def is_set(self) -> bool:
        return self._stopped

    def wait(self, timeout: float | None = None) -> bool:
        if not self._stopped:
            assert timeout is not None, "the sampler always waits for a deadline"
            target = self.now + max(0.0, timeout)
            if target >= self._stop_at - 1e-9:
                self.now, self._stopped = max(self.now, self._stop_at), True
            else:
                self.now = target
        return self._stopped


def _poll(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Wait for `condition`, checked every 10 ms; False after `timeout_s`, a bound only a
    stuck thread reaches."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_sampler_rate_and_final_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 20 Hz for 0.5 s the sampler takes 10 samples, on its deadlines, the last one when
    stopped (on a fake clock: the count is the schedule's, not the machine's)."""
    from jupyter_prov4ml.hardware import sampler as sampler_module

    clock = _FakeClock(stop_after_s=0.5)
    monkeypatch.setattr(sampler_module, "time", clock)
    monkeypatch.setattr(
        sampler_module, "threading", SimpleNamespace(Event=lambda: clock, Thread=threading.Thread)
    )
    host = _Host()
    sampler = Sampler(host, NullGpu("none"), Notices(), interval_s=0.05)
    sampler.start()
    assert _poll(clock.is_set)
    columns = sampler.stop()
    assert len(columns) == host.reads == 10
    assert columns.column("elapsed_s") == pytest.approx([0.05 * k for k in range(1, 11)])


def test_sampler_takes_real_timestamps_and_a_final_sample() -> None:
    """On the real clock: samples are stamped with their time, never sooner than the interval
    allows (no bursts), and `stop()` takes one last sample then."""
    interval_s = 0.05
    host = _Host()
    sampler = Sampler(host, NullGpu("none"), Notices(), interval_s=interval_s)
    sampler.start()
    assert _poll(lambda: host.reads >= 3)
    before_stop_s = time.perf_counter() - sampler.t0_ns / 1e9
    columns = sampler.stop()
    elapsed = columns.column("elapsed_s")
    assert len(elapsed) == host.reads >= 4
    assert all(a < b for a, b in itertools.pairwise(elapsed))
    # The k-th tick waits for the k-th deadline (a clock-resolution margin aside).
    assert all(t >= k * interval_s - 0.005 for k, t in enumerate(elapsed[:-1], start=1))
    assert elapsed[-1] >= before_stop_s - 1e-6


def test_failing_probe_is_reported_once_and_dropped() -> None:
    """A host probe that raises is dropped after repeated failures, with one notice."""

    class Broken(_Host):
        def read(self, elapsed_s: float) -> HostSample:
            self.reads += 1
            raise RuntimeError("sensor gone")

    notices = Notices()
    broken = Broken()
    sampler = Sampler(broken, NullGpu("none"), notices, interval_s=0.01)
    sampler.start()
    assert _poll(notices.has_pending)
    sampler.stop()
    messages = notices.drain()
    assert len(messages) == 1 and "host sampling stopped" in messages[0]
    assert broken.reads == MAX_CONSECUTIVE_FAILURES  # never read again, not even at stop


def test_dashboard_throttles_and_accumulates_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ticks at 100 Hz for 1 s (on a fake clock) redraw the dashboard 4 times, every 0.25 s,
    while every tick counts toward the running energy (100 % of one core at 12 W/core for
    1 s = 12 J)."""
    from jupyter_prov4ml.views import live_monitor
    from jupyter_prov4ml.views.live_monitor import LiveMonitor

    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(
        live_monitor,
        "time",
        SimpleNamespace(monotonic=lambda: clock.now, perf_counter_ns=time.perf_counter_ns),
    )
    monitor = LiveMonitor(
        "t", (), watts_per_core=12.0, carbon_intensity_g_per_kwh=481.0, cpu_count=2
    )
    for tick in range(1, 101):
        elapsed = tick * 0.01
        clock.now = 1000.0 + elapsed
        monitor.on_tick(Tick(elapsed, HostSample(elapsed, 100.0, 2**20, 50.0, 2**30), ()))
    assert monitor.updates == 4
    assert monitor._cpu_j == pytest.approx(12.0)
    assert 'data-field="elapsed_s"' in monitor._figures.value


class _Counters:
    """One reading of the counters both host readers derive their CPU figures from: the
    monotonic clock, this process's CPU time, and /proc/stat's first (all-CPU) line."""

    def __init__(self) -> None:
        self.wall_s = time.monotonic()
        times = os.times()
        self.cpu_s = times.user + times.system
        with open("/proc/stat", "rb") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait: not busy, for both readers
        # The /proc reader counts every field; psutil leaves out guest time (fields 8 and 9,
        # already inside user and nice time). Both totals are kept.
        self.totals = (sum(fields), sum(fields) - sum(fields[8:10]))
        self.busy = tuple(total - idle for total in self.totals)


def _percent_bounds(
    outer: tuple[_Counters, _Counters], inner: tuple[_Counters, _Counters]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """What a reader whose window starts between `outer[0]` and `inner[0]` and ends between
    `inner[1]` and `outer[1]` can report, its counters only ever growing: (low, high) of the
    process CPU % and of the system CPU %. Whatever the machine's load, however long each
    step took, each figure lies in its interval."""
    (a, d), (b, c) = outer, inner
    process = (
        100 * (c.cpu_s - b.cpu_s) / (d.wall_s - a.wall_s),
        100 * (d.cpu_s - a.cpu_s) / (c.wall_s - b.wall_s),
    )
    # Two ticks a CPU of slack: the idle and iowait counters may step back a tick on some
    # kernels (psutil clips such steps; the /proc reader does not).
    slack = 2 * (os.cpu_count() or 1)
    lows, highs = [], []
    for formula in (0, 1):
        busy_in, busy_out = c.busy[formula] - b.busy[formula], d.busy[formula] - a.busy[formula]
        total_in = c.totals[formula] - b.totals[formula]
        total_out = d.totals[formula] - a.totals[formula]
        lows.append(100 * (busy_in - slack) / (total_out + slack))
        highs.append(100 * (busy_out + slack) / max(1, total_in - slack))
    system = (max(0.0, min(lows)), min(100.0, max(highs)))
    return process, system


def test_proc_reader_agrees_with_psutil() -> None:
    """The /proc reader (used on Linux, 6× cheaper) reports what psutil reports: both CPU
    figures of each lie within what the counters allow for the windows they measured
    (readings taken just outside and just inside them), so the check holds on a loaded
    machine as on an idle one."""
    from jupyter_prov4ml.hardware.host import HostReader, ProcHostReader

    light, reference = ProcHostReader(), HostReader()
    before_start = _Counters()
    light.prime()
    reference.prime()
    after_start = _Counters()
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:
        sum(range(1000))  # busy: about one core
    before_end = _Counters()
    ours, theirs = light.read(0.5), reference.read(0.5)
    after_end = _Counters()
    light.close()
    (process_low, process_high), (system_low, system_high) = _percent_bounds(
        (before_start, after_end), (after_start, before_end)
    )
    for sample in (ours, theirs):
        # 0.05: psutil's own figure is rounded to one decimal
        assert process_low - 0.05 <= sample.process_cpu_percent <= process_high + 0.05
        assert system_low - 0.05 <= sample.system_cpu_percent <= system_high + 0.05
    assert abs(ours.process_rss_bytes - theirs.process_rss_bytes) <= 1 << 20
    used, reference_used = ours.system_memory_used_bytes, theirs.system_memory_used_bytes
    assert abs(used - reference_used) <= 0.05 * reference_used
