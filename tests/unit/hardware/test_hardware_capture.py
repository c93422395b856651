"""`%%provrun` with GPUs, through the magic, with a faithful fake at the pynvml boundary;
and the sampler and dashboard on their own."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs, deserialize_strict, displayed
from fake_nvml import FakeGpu, FakeNvml
from jupyter_prov4ml.hardware.gpu import NullGpu, open_gpu_probe
from jupyter_prov4ml.hardware.sampler import SampleColumns, Sampler, Tick
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
    run_and_flush(shell, "%%provrun --no-graph --interval 0.05\nimport time\ntime.sleep(0.5)\n")
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    (gpu,) = [r for r in run["energy"]["readings"] if r["component"] == "gpu"]
    assert gpu["method"] == "integrated-power"
    assert gpu["energy_j"] == pytest.approx(200.0 * run["wall_time_s"], rel=0.25)


def test_gpu_lost_mid_run(shell: Any, fake_gpus: FakeNvml, store_dir: Path, capsys: Any) -> None:
    """A GPU that falls off the bus mid-run: one warning line, no traceback, the cell's result
    is unaffected and the run is saved with the CPU energy and the GPU samples taken so far."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.user_ns["nvml"] = fake_gpus
    result = shell.run_cell(
        "%%provrun --no-graph --interval 0.05\nimport time\ntime.sleep(0.3)\n"
        "nvml.fail_after(0)\ntime.sleep(0.3)\nanswer = 42\n",
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
    result = shell.run_cell(
        "%%provrun --no-graph --interval 0.02\nimport time\ntime.sleep(0.25)\nanswer = 42\n",
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


def test_sampler_rate_and_final_sample() -> None:
    """At 20 Hz for 0.5 s the sampler takes ~10 samples, with real timestamps, plus a final one
    when stopped."""
    sampler = Sampler(_Host(), NullGpu("none"), Notices(), interval_s=0.05)
    sampler.start()
    time.sleep(0.5)
    columns = sampler.stop()
    assert 6 <= len(columns) <= 13
    elapsed = columns.column("elapsed_s")
    assert elapsed == sorted(elapsed) and elapsed[-1] >= 0.45


def test_failing_probe_is_reported_once_and_dropped() -> None:
    """A host probe that raises is dropped after repeated failures, with one notice."""

    class Broken(_Host):
        def read(self, elapsed_s: float) -> HostSample:
            raise RuntimeError("sensor gone")

    notices = Notices()
    sampler = Sampler(Broken(), NullGpu("none"), notices, interval_s=0.01)
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    messages = notices.drain()
    assert len(messages) == 1 and "host sampling stopped" in messages[0]


def test_dashboard_throttles_and_accumulates_energy() -> None:
    """Ticks at 100 Hz redraw the dashboard at most 4 times a second, while every tick counts
    toward the running energy (100 % of one core at 12 W/core for 1 s ≈ 12 J)."""
    from jupyter_prov4ml.views.live_monitor import LiveMonitor

    monitor = LiveMonitor(
        "t", (), watts_per_core=12.0, carbon_intensity_g_per_kwh=481.0, cpu_count=2
    )
    start = time.monotonic()
    ticks = 0
    while (elapsed := time.monotonic() - start) < 1.0:
        monitor.on_tick(Tick(elapsed, HostSample(elapsed, 100.0, 2**20, 50.0, 2**30), ()))
        ticks += 1
        time.sleep(0.01)
    assert ticks > 50
    assert 3 <= monitor.updates <= 5
    assert monitor._cpu_j == pytest.approx(12.0, rel=0.1)
    assert 'data-field="elapsed_s"' in monitor._figures.value


def test_proc_reader_agrees_with_psutil() -> None:
    """The /proc reader (used on Linux, 6× cheaper) reports what psutil reports."""
    from jupyter_prov4ml.hardware.host import HostReader, ProcHostReader

    light, reference = ProcHostReader(), HostReader()
    light.prime()
    reference.prime()
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:
        sum(range(1000))  # busy: about one core
    ours, theirs = light.read(0.5), reference.read(0.5)
    light.close()
    assert abs(ours.process_rss_bytes - theirs.process_rss_bytes) <= 1 << 20
    assert abs(ours.process_cpu_percent - theirs.process_cpu_percent) <= 15
    assert abs(ours.system_cpu_percent - theirs.system_cpu_percent) <= 25
    used, reference_used = ours.system_memory_used_bytes, theirs.system_memory_used_bytes
    assert abs(used - reference_used) <= 0.05 * reference_used
