"""LiveMonitor: the dashboard under a running `%%provrun` cell. The only module that imports
ipywidgets, and only when a notebook front end will show the dashboard.

It is driven by the sampler's subscriber, which runs on the sampler thread: it only sets widget
values (never prints, whose output would land in whatever cell runs then), at most 4 times a
second, and each value is one HTML string, so one comm message per update.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Sequence
from typing import Any

from .energy import co2_grams
from .probes.gpu import GpuInfo
from .records import CellRun, EnergyLedger
from .sampling import Tick

MIN_UPDATE_INTERVAL_S = 0.25
_MIB = 2**20


def _field(name: str, text: str) -> str:
    return f'<span class="p4m-value" data-field="{name}">{html.escape(text)}</span>'


def _bar(percent: float | None) -> str:
    width = 0.0 if percent is None or percent != percent else max(0.0, min(100.0, percent))
    return (
        '<span style="display:inline-block;width:80px;height:8px;background:#e0e0e0;'
        'vertical-align:middle;margin:0 4px">'
        f'<span style="display:block;height:8px;width:{width:.0f}%;background:#4a76c9"></span>'
        "</span>"
    )


class LiveMonitor:
    """A live view of elapsed time, CPU, RAM, GPUs, energy and CO2 for one run."""

    def __init__(
        self,
        title: str,
        gpus: Sequence[GpuInfo],
        watts_per_core: float,
        carbon_intensity_g_per_kwh: float,
        cpu_count: int,
    ) -> None:
        import ipywidgets

        self._title = title
        self._gpus = tuple(gpus)
        self._watts_per_core = watts_per_core
        self._intensity = carbon_intensity_g_per_kwh
        self._cpu_count = cpu_count
        self._lock = threading.Lock()
        self._last_render = 0.0
        self._last_elapsed = 0.0
        self._cpu_j = 0.0
        self._gpu_j = [0.0] * len(self._gpus)
        self._last_power: list[float | None] = [None] * len(self._gpus)
        self.updates = 0
        self._figures = ipywidgets.HTML(value=self._render_waiting())
        # Room for the training-loop progress and latest metrics (filled by `track`).
        self.extra = ipywidgets.VBox([])
        self.box = ipywidgets.VBox([self._figures, self.extra])
        self.box.add_class("jp-prov4ml-live")

    def show(self) -> None:
        from IPython.display import display

        display(self.box)

    # -- sampler thread ------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Accumulate every tick's energy; redraw at most every MIN_UPDATE_INTERVAL_S."""
        with self._lock:
            dt = max(0.0, tick.elapsed_s - self._last_elapsed)
            self._last_elapsed = tick.elapsed_s
            if tick.host is not None:
                cores_busy = tick.host.process_cpu_percent / 100.0
                self._cpu_j += cores_busy * self._watts_per_core * dt
            for gpu in tick.gpus:
                if gpu.index < len(self._gpu_j) and gpu.power_w is not None:
                    previous = self._last_power[gpu.index]
                    mean_w = gpu.power_w if previous is None else (previous + gpu.power_w) / 2
                    self._gpu_j[gpu.index] += mean_w * dt
                    self._last_power[gpu.index] = gpu.power_w
            now = time.monotonic()
            if now - self._last_render < MIN_UPDATE_INTERVAL_S:
                return
            self._last_render = now
            energy_j = self._cpu_j + sum(self._gpu_j)
            value = self._render(
                status="running",
                elapsed_s=tick.elapsed_s,
                tick=tick,
                energy_j=energy_j,
                method="estimated" + ("+integrated-power" if any(self._gpu_j) else ""),
                co2_g=co2_grams(energy_j, self._intensity),
            )
        self._figures.value = value
        self.updates += 1

    # -- main thread ---------------------------------------------------------------------------

    def freeze(self, run: CellRun, last_tick: Tick | None) -> None:
        """Show the run's final, recorded figures (the same as in its PROV document)."""
        energy: EnergyLedger | None = run.energy
        with self._lock:
            self._last_render = float("inf")  # no more live redraws
            value = self._render(
                status=run.status,
                elapsed_s=run.wall_time_s,
                tick=last_tick,
                energy_j=energy.total_j if energy else 0.0,
                method=energy.methods() if energy else "none",
                co2_g=energy.co2_g if energy else 0.0,
            )
        self._figures.value = value

    # -- rendering -----------------------------------------------------------------------------

    def _render_waiting(self) -> str:
        return self._frame("starting", _field("elapsed_s", "0.0") + " s")

    def _render(
        self,
        status: str,
        elapsed_s: float,
        tick: Tick | None,
        energy_j: float,
        method: str,
        co2_g: float,
    ) -> str:
        rows = [("elapsed", _field("elapsed_s", f"{elapsed_s:.1f}") + " s")]
        host = tick.host if tick is not None else None
        if host is not None:
            share = host.process_cpu_percent / max(1, self._cpu_count)
            rows.append(
                (
                    "CPU",
                    _bar(share)
                    + _field("process_cpu_percent", f"{host.process_cpu_percent:.0f}")
                    + " % of one core · RSS "
                    + _field("process_rss_mib", f"{host.process_rss_bytes / _MIB:.1f}")
                    + " MiB",
                )
            )
        for gpu in tick.gpus if tick is not None else ():
            info = self._gpus[gpu.index] if gpu.index < len(self._gpus) else None
            used = gpu.memory_used_bytes
            total = info.memory_total_bytes if info else None
            memory = "n/a" if used is None else f"{used / _MIB:.0f}"
            rows.append(
                (
                    f"GPU{gpu.index}",
                    _bar(gpu.utilization_percent)
                    + _field(
                        f"gpu{gpu.index}_utilization_percent",
                        "n/a"
                        if gpu.utilization_percent is None
                        else f"{gpu.utilization_percent:.0f}",
                    )
                    + " % · memory "
                    + _field(f"gpu{gpu.index}_memory_used_mib", memory)
                    + (f" / {total / _MIB:.0f}" if total else "")
                    + " MiB · power "
                    + _field(
                        f"gpu{gpu.index}_power_w",
                        "n/a" if gpu.power_w is None else f"{gpu.power_w:.0f}",
                    )
                    + " W",
                )
            )
        rows.append(
            (
                "energy",
                _field("energy_j", f"{energy_j:.1f}")
                + " J = "
                + _field("energy_wh", f"{energy_j / 3600:.4f}")
                + " Wh · CO₂ "
                + _field("co2_g", f"{co2_g:.3f}")
                + " g · "
                + _field("energy_method", method),
            )
        )
        body = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{name}</th>"
            f"<td style='text-align:left'>{cells}</td></tr>"
            for name, cells in rows
        )
        return self._frame(status, f"<table>{body}</table>")

    def _frame(self, status: str, body: str) -> str:
        return f"<div><b>{html.escape(self._title)}</b> · {_field('status', status)}</div>{body}"


def live_view_supported(shell: Any) -> bool:
    """True in a kernel with a front end that can show widgets (not a terminal IPython)."""
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True
