"""The few lines shown under a finished `%%provrun` cell (and by `%prov show`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.records import CellRun
from jupyter_prov4ml.views.escape import html_text


@dataclass(frozen=True)
class RunSummary:
    """The few lines shown under a `%%provrun` cell."""

    run: CellRun
    latest_metrics: tuple[tuple[str, str, float], ...] = ()
    stale_inputs: tuple[str, ...] = ()

    def facts(self) -> list[tuple[str, str]]:
        run = self.run
        facts = [
            ("run", f"{run.name or 'provrun'} · {run.run_id}"),
            ("status", run.status + (f" ({run.error_type})" if run.error_type else "")),
            ("duration", f"{run.wall_time_s:.3f} s wall, {run.cpu_time_s:.3f} s CPU"),
        ]
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
        return f"<table class='jp-prov4ml-summary'>{rows}</table>"

    def __repr__(self) -> str:
        return "\n".join(f"{k:>12}: {v}" for k, v in self.facts())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
