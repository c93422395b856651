"""LiveMonitor: the dashboard under a running `%%provrun` cell. The only module that imports
ipywidgets, and only when a notebook front end will show the dashboard.

It is driven by the sampler's subscriber, which runs on the sampler thread: it only sets widget
values (never prints, whose output would land in whatever cell runs then), at most 4 times a
second, and each value is one HTML string, so one comm message per update.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jupyter_prov4ml.capture.run_capture import RunCapture
from jupyter_prov4ml.hardware.gpu import GpuInfo
from jupyter_prov4ml.hardware.sampler import Tick
from jupyter_prov4ml.records import CellRun, EnergyLedger, co2_grams
from jupyter_prov4ml.views.escape import html_text

MIN_UPDATE_INTERVAL_S = 0.25
MAX_METRIC_ROWS = 8
_SPARKS = "▁▂▃▄▅▆▇█"
_MIB = 2**20


def sparkline(values: list[float]) -> str:
    """A few characters sketching recent values (non-finite ones as spaces)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(
        _SPARKS[min(7, int((v - low) / span * 8))] if math.isfinite(v) else " " for v in values
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _field(name: str, text: str) -> str:
    return f'<span class="p4m-value" data-field="{html_text(name)}">{html_text(text)}</span>'


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
        self._capture: RunCapture | None = None
        # One row per Dask worker (views/cluster_summary.live_worker_rows), when a cluster runs.
        self._cluster_rows: Callable[[], list[tuple[str, str]]] | None = None
        self._figures = ipywidgets.HTML(value=self._render_waiting())
        # Room for the training-loop progress and latest metrics (filled by `track`).
        self.extra = ipywidgets.VBox([])
        self.box = ipywidgets.VBox([self._figures, self.extra])
        self.box.add_class("jp-prov4ml-live")

    def watch(self, capture: RunCapture) -> None:
        """Also show this run's loop progress and latest metrics."""
        self._capture = capture

    def watch_cluster(self, rows: Callable[[], list[tuple[str, str]]]) -> None:
        """Also show a row per Dask worker: `rows()` gives (label, escaped HTML) pairs."""
        self._cluster_rows = rows

    def show(self) -> None:
        from IPython.display import display

        display(self.box)

    # -- sampler thread ------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Accumulate every tick's energy; redraw at most every MIN_UPDATE_INTERVAL_S."""
        with self._lock:
            dt = max(0.0, tick.elapsed_s - self._last_elapsed)
            self._last_elapsed = tick.elapsed_s
            # A window too short to measure CPU (NaN) adds nothing rather than poisoning the sum.
            # The process tree's CPU (children included) where it is read, else the kernel's.
            cpu = tick.tree.cpu_percent if tick.tree is not None else math.nan
            if not math.isfinite(cpu) and tick.host is not None:
                cpu = tick.host.process_cpu_percent
            if math.isfinite(cpu):
                self._cpu_j += cpu / 100.0 * self._watts_per_core * dt
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
        if host is not None and math.isfinite(host.process_cpu_percent):
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
        tree = tick.tree if tick is not None else None
        if tree is not None and tree.process_count > 1:
            rows.append(
                (
                    "processes",
                    _field("tree_process_count", f"{tree.process_count}")
                    + " · CPU "
                    + _field(
                        "tree_cpu_percent",
                        "n/a" if not math.isfinite(tree.cpu_percent) else f"{tree.cpu_percent:.0f}",
                    )
                    + " % of one core · RSS "
                    + _field("tree_rss_mib", f"{tree.reading.rss_bytes / _MIB:.1f}")
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
        rows += self._loop_rows(status == "running")
        if self._cluster_rows is not None:
            try:
                rows += self._cluster_rows()
            except Exception:  # noqa: BLE001 - a cluster's figures are not worth the dashboard
                self._cluster_rows = None
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

    def _loop_rows(self, running: bool) -> list[tuple[str, str]]:
        """Loop progress like tqdm (i/N, rate, ETA) and each metric's last value + sparkline."""
        capture = self._capture
        if capture is None:
            return []
        rows = []
        progress = capture.loops.progress
        if progress is not None:
            elapsed = max(1e-9, (time.perf_counter_ns() - progress.started_ns) / 1e9)
            rate = progress.done / elapsed
            total = progress.total
            text = f"{progress.done}" + (f"/{total}" if total else "")
            share = 100.0 * progress.done / total if total else None
            eta = ""
            if running and total and rate > 0 and progress.done < total:
                eta = f" · ETA {_duration((total - progress.done) / rate)}"
            rows.append(
                (
                    html_text(progress.loop),
                    _bar(share)
                    + _field("loop_done", text)
                    + f" · {_field('loop_rate', f'{rate:.2f}')} it/s{eta}",
                )
            )
        for name, context, last, recent in capture.metrics.latest()[:MAX_METRIC_ROWS]:
            key = f"metric:{name}/{context}"
            rows.append(
                (
                    html_text(f"{name} ({context})"),
                    _field(key, f"{last:.5g}") + f" <span style='font-family:monospace'>"
                    f"{html_text(sparkline(recent))}</span>",
                )
            )
        return rows

    def _frame(self, status: str, body: str) -> str:
        return f"<div><b>{html_text(self._title)}</b> · {_field('status', status)}</div>{body}"


def live_view_supported(shell: Any) -> bool:
    """True in a kernel with a front end that can show widgets (not a terminal IPython)."""
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True
