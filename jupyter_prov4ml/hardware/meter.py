"""Energy of a window (a `%%provrun` cell; later each training-loop step), per device.

Counters are read at both edges of the window, as Zeus's begin_window/end_window do; the
sampler's power readings in between are the fallback. Each reading says how it was obtained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from jupyter_prov4ml.hardware.energy import RaplReader, estimate_cpu_energy_j, gpu_window_energy
from jupyter_prov4ml.hardware.gpu import GpuReader, GpuUnavailable
from jupyter_prov4ml.hardware.sampler import SampleColumns
from jupyter_prov4ml.records import EnergyLedger, EnergyReading
from jupyter_prov4ml.settings import EnergyConfig


@dataclass(frozen=True, slots=True)
class WindowStart:
    """Counter values when a window opened."""

    perf_s: float
    cpu_s: float
    gpu_mj: tuple[int | None, ...]
    rapl_uj: dict[str, int]


class EnergyMeter:
    """Measures windows with the best evidence each device offers."""

    def __init__(self, gpu: GpuReader, rapl: RaplReader, config: EnergyConfig) -> None:
        self.gpu = gpu
        self.rapl = rapl
        self.config = config

    def begin(self) -> WindowStart:
        return WindowStart(
            perf_s=time.perf_counter(),
            cpu_s=time.process_time(),
            gpu_mj=self._gpu_counters(),
            rapl_uj=self.rapl.read_uj() if self.rapl.available else {},
        )

    def end(
        self,
        start: WindowStart,
        samples: SampleColumns | None,
        children_cpu_time_s: float = 0.0,
    ) -> EnergyLedger:
        """The window's energy per device; `children_cpu_time_s`: what the kernel's child
        processes spent in it, added to the kernel's own CPU for the CPU estimate."""
        duration_s = max(0.0, time.perf_counter() - start.perf_s)
        cpu_time_s = max(0.0, time.process_time() - start.cpu_s) + max(0.0, children_cpu_time_s)
        whose = "process-tree" if children_cpu_time_s > 0 else "process"
        readings: list[EnergyReading] = []
        if self.rapl.available and start.rapl_uj:
            readings += self.rapl.readings(start.rapl_uj, self.rapl.read_uj(), duration_s)
        else:
            readings.append(
                EnergyReading(
                    "cpu",
                    "cpu",
                    estimate_cpu_energy_j(cpu_time_s, self.config.watts_per_core),
                    "estimated",
                    duration_s,
                    f"{cpu_time_s:.3g} {whose} CPU-seconds × {self.config.watts_per_core:g} W "
                    "per core (Green Algorithms model)",
                )
            )
        end_mj = self._gpu_counters()
        times = samples.column("elapsed_s") if samples is not None else []
        for index, (first, last) in enumerate(zip(start.gpu_mj, end_mj, strict=False)):
            power = samples.column(f"gpu{index}_power_w") if samples is not None else []
            reading = gpu_window_energy(first, last, times, power, duration_s, device=f"gpu{index}")
            if reading is not None:
                readings.append(reading)
        return EnergyLedger(tuple(readings), self.config.carbon_intensity_g_per_kwh)

    def _gpu_counters(self) -> tuple[int | None, ...]:
        if not self.gpu.available:
            return (None,) * len(self.gpu.devices)
        try:
            return self.gpu.energy_mj()
        except GpuUnavailable:
            # The sampler reports the lost GPU; the window falls back to its power samples.
            return (None,) * len(self.gpu.devices)
