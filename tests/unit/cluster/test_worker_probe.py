"""The worker-side probe at the NVML boundary (the project's fake pynvml): a worker sees the
GPUs of its CUDA_VISIBLE_DEVICES only, reports each one's energy since the run began, its
peak memory and mean utilisation; samples go out through the worker's loop."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from fake_nvml import FakeGpu, FakeNvml
from jupyter_prov4ml.cluster.worker_probe import WorkerSampler

UUID_A = "GPU-aaaaaaaa-0000-4000-8000-000000000000"
UUID_B = "GPU-bbbbbbbb-0000-4000-8000-000000000000"


class _Loop:
    """What the sampler needs of a worker's event loop: a thread-safe add_callback."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def add_callback(self, function: Any, topic: str, message: dict[str, Any]) -> None:
        self.sent.append((topic, message))


def _worker() -> Any:
    return SimpleNamespace(
        name="gpu-worker",
        address="tcp://10.0.0.5:4000",
        state=SimpleNamespace(nthreads=4),
        loop=_Loop(),
        log_event=lambda topic, message: None,
    )


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(
        [
            FakeGpu(uuid=UUID_A, power_mw=100_000),
            FakeGpu(uuid=UUID_B, power_mw=400_000, memory_used_bytes=3 * 2**30),
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_a_worker_reports_its_visible_gpu_energy_memory_and_utilisation(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CUDA_VISIBLE_DEVICES=1 (one GPU per worker, as dask-cuda runs them) the worker
    reports GPU B only: 10 s at 400 W is 4,000 J = 4,000,000 mJ since its setup."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    worker = _worker()
    sampler = WorkerSampler(worker, "run-1", "topic-1", 60.0)
    nvml.advance(10.0)
    snapshot = sampler.snapshot(final=True)
    (gpu,) = snapshot["gpus"]
    assert gpu["uuid"] == UUID_B
    assert gpu["energy_mj"] == 4_000_000
    assert gpu["memory_peak_bytes"] == 3 * 2**30
    assert gpu["utilization_mean_percent"] == 50.0
    assert snapshot["name"] == "gpu-worker" and snapshot["nthreads"] == 4
    sampler.start()
    sampler.stop()
    assert [topic for topic, _ in worker.loop.sent] == ["topic-1", "topic-1"]
    assert worker.loop.sent[-1][1]["final"] is True
    assert nvml.shutdown_calls == 1


def test_a_worker_without_nvml_reports_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where NVML cannot start, the worker's figures simply have no GPUs."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=9))
    snapshot = WorkerSampler(_worker(), "run-1", "topic-1", 60.0).snapshot()
    assert snapshot["gpus"] == [] and snapshot["cpu_s"] >= 0 and snapshot["rss_bytes"] > 0
