"""The few lines shown under a finished `%%provrun` cell (and by `%prov show`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.records import CellRun
from jupyter_prov4ml.views.cluster_summary import cluster_facts
from jupyter_prov4ml.views.escape import html_text
from jupyter_prov4ml.views.svg_plot import downsample, number, sparkline

if TYPE_CHECKING:
    from jupyter_prov4ml.capture.metrics import MetricLog

# Metrics drawn as small curves under a run's summary (the rest are listed by value).
MAX_SUMMARY_CURVES = 12
# Points each small curve keeps (its width in pixels is about this).
SUMMARY_CURVE_POINTS = 240


@dataclass(frozen=True)
class RunSummary:
    """The few lines shown under a `%%provrun` cell."""

    run: CellRun
    latest_metrics: tuple[tuple[str, str, float], ...] = ()
    stale_inputs: tuple[str, ...] = ()
    # (name, context, values thinned for display): drawn as a small curve per metric
    curves: tuple[tuple[str, str, tuple[float, ...]], ...] = ()

    def facts(self) -> list[tuple[str, str]]:
        run = self.run
        facts = [
            ("run", f"{run.name or 'provrun'} · {run.run_id}"),
            ("status", run.status + (f" ({run.error_type})" if run.error_type else "")),
            ("duration", f"{run.wall_time_s:.3f} s wall, {run.cpu_time_s:.3f} s CPU"),
        ]
        if run.kernel_cpu_time_s is not None:
            facts.append(
                (
                    "CPU by process",
                    f"kernel {run.kernel_cpu_time_s:.3f} s, child processes "
                    f"{max(0.0, run.cpu_time_s - run.kernel_cpu_time_s):.3f} s",
                )
            )
        if self.stale_inputs:
            names = ", ".join(self.stale_inputs)
            facts.append(("warning", f"read stale inputs: {names} (see %prov stale)"))
        hardware = run.hardware
        if hardware is not None:
            rss = hardware.get("process_rss_bytes")
            cpu = hardware.get("process_cpu_percent")
            if rss:
                facts.append(("peak RSS", f"{rss.max / 2**20:.1f} MiB"))
            if cpu:
                facts.append(("process CPU", f"mean {cpu.mean:.0f} %, max {cpu.max:.0f} %"))
            index = 0
            while (util := hardware.get(f"gpu{index}_utilization_percent")) is not None:
                text = f"utilisation mean {util.mean:.0f} %, max {util.max:.0f} %"
                if memory := hardware.get(f"gpu{index}_memory_used_bytes"):
                    text += f"; peak memory {memory.max / 2**20:.0f} MiB"
                if power := hardware.get(f"gpu{index}_power_w"):
                    text += f"; power mean {power.mean:.0f} W, max {power.max:.0f} W"
                facts.append((f"GPU{index}", text))
                index += 1
            facts.append(("samples", f"{hardware.sample_count} at {1 / hardware.interval_s:g} Hz"))
        if run.energy is not None:
            parts = ", ".join(
                f"{r.device} {r.energy_j:.1f} J ({r.method})" for r in run.energy.readings
            )
            facts.append(("energy", f"{run.energy.total_j:.1f} J: {parts}"))
            facts.append(
                (
                    "CO2",
                    f"{run.energy.co2_g:.3f} g (estimated at "
                    f"{run.energy.carbon_intensity_g_per_kwh:g} g/kWh)",
                )
            )
        if run.params:
            facts.append(("params", ", ".join(f"{p.name}={p.value!r}" for p in run.params)))
        for loop in run.loops:
            of = f" of {loop.length:,}" if loop.length is not None else ""
            facts.append(("loop steps", f"{loop.completed:,} completed{of} ({loop.loop})"))
        if run.steps and not run.loops:  # a record from before loops were summarised
            loops = sorted({step.loop for step in run.steps})
            done = sum(step.completed for step in run.steps)
            facts.append(
                ("loop steps", f"{done} completed of {len(run.steps)} ({', '.join(loops)})")
            )
        facts += cluster_facts(run)
        if run.artifacts:
            facts.append(("artifacts", ", ".join(a.name for a in run.artifacts)))
        if self.latest_metrics:
            facts.append(
                (
                    "metrics",
                    ", ".join(
                        f"{name} ({context}) {value:.4g}"
                        for name, context, value in self.latest_metrics
                    ),
                )
            )
        return facts

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html_text(k)}</th>"
            f"<td style='text-align:left'>{html_text(v)}</td></tr>"
            for k, v in self.facts()
        )
        curves = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html_text(name)} "
            f"({html_text(context)})</th><td style='text-align:left'>{sparkline(values)} "
            f"{html_text(number(values[-1]))}</td></tr>"
            for name, context, values in self.curves
            if values
        )
        return f"<table class='jp-prov4ml-summary'>{rows}{curves}</table>"

    def __repr__(self) -> str:
        return "\n".join(f"{k:>12}: {v}" for k, v in self.facts())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def summary_curves(log: MetricLog | None) -> tuple[tuple[str, str, tuple[float, ...]], ...]:
    """Each metric series of a finished run thinned to a small curve's points (display only;
    the store keeps every point). Never raises: a summary without curves is still one."""
    if log is None:
        return ()
    try:
        curves = []
        for series in list(log.series.values())[:MAX_SUMMARY_CURVES]:
            values = list(series.values)
            _, thinned = downsample(range(len(values)), values, SUMMARY_CURVE_POINTS // 4)
            curves.append((series.name, series.context, tuple(thinned)))
        return tuple(curves)
    except Exception:  # noqa: BLE001 - a curve is a nicety; the run's record is what counts
        return ()
