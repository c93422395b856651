"""Energy per window: from a cumulative counter, integrated power, RAPL, or an estimate.

Pure arithmetic plus a small sysfs reader; no GPU library is imported here. Every reading
carries the method that produced it, because a measured counter, integrated power samples and
a per-core estimate differ in trustworthiness by an order of magnitude.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jupyter_prov4ml.records import EnergyReading

__all__ = [
    "RaplReader",
    "counter_delta_j",
    "estimate_cpu_energy_j",
    "gpu_window_energy",
    "integrate_power_j",
]


_RAPL_PACKAGE = re.compile(r"intel-rapl:(\d+)")


def counter_delta_j(start_mj: int, end_mj: int) -> float | None:
    """Joules between two readings of a cumulative millijoule counter; None if it went back.

    NVML's counter only goes back when the driver reloads (a GPU reset), so a negative delta
    means "unknown", and the caller falls back to another method.
    """
    delta = end_mj - start_mj
    return None if delta < 0 else delta / 1000.0


def _points(
    times_s: Sequence[float | None], power_w: Sequence[float | None]
) -> list[tuple[float, float]]:
    """(time, power) pairs with both values present and finite, in time order."""
    if len(times_s) != len(power_w):
        raise ValueError(f"{len(times_s)} timestamps but {len(power_w)} power samples")
    points: list[tuple[float, float]] = []
    for time, power in zip(times_s, power_w, strict=True):
        if time is None or power is None or not (math.isfinite(time) and math.isfinite(power)):
            continue
        if points and time < points[-1][0]:
            raise ValueError("timestamps must not decrease")
        points.append((time, power))
    return points


def integrate_power_j(times_s: Sequence[float | None], power_w: Sequence[float | None]) -> float:
    """Trapezoidal integral of power over the samples' real timestamps, in joules.

    Points whose time or power is None or NaN are skipped (the trapezoid bridges the gap);
    fewer than two valid points give 0.0. Raises ValueError on mismatched lengths or
    decreasing timestamps.
    """
    points = _points(times_s, power_w)
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def gpu_window_energy(
    start_mj: int | None,
    end_mj: int | None,
    times_s: Sequence[float | None],
    power_w: Sequence[float | None],
    duration_s: float,
    counter_period_s: float = 0.1,
    *,
    device: str = "gpu",
) -> EnergyReading | None:
    """A GPU's energy over a window of `duration_s`, from the best evidence at hand.

    `start_mj`/`end_mj` are the cumulative counter at the window's edges (None without one);
    `times_s`/`power_w` are the power samples taken inside the window. The rule:

    1. The counter delta, method `measured-counter`, when both readings exist, the counter
       did not go back, the window lasts at least `counter_period_s` (the counter updates
       only every 20–100 ms, so a shorter window may see zero or one whole update), and the
       delta is positive; a zero delta is believed only when power samples all read 0 W,
       since a zero from a powered GPU means a stuck or not-yet-updated counter.
    2. Otherwise power samples (negative or NaN ones dropped), method `integrated-power`:
       with two or more at distinct times, the trapezoidal integral, extended at the samples'
       mean power to the whole window when they span less of it; else their mean power ×
       `duration_s`.
    3. Otherwise a positive counter delta from a too-short window, marked as such in `detail`.
    4. Otherwise None: a zero or negative figure would claim a measurement nobody made.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be ≥ 0, got {duration_s!r}")
    delta_j = None
    if start_mj is not None and end_mj is not None:
        delta_j = counter_delta_j(start_mj, end_mj)
    points = [(time, power) for time, power in _points(times_s, power_w) if power >= 0]
    short = duration_s < counter_period_s
    # A powered GPU never draws 0 W, so a zero delta is believed only when samples agree.
    zero_confirmed = bool(points) and all(power == 0 for _, power in points)

    if delta_j is not None and not short and (delta_j > 0 or zero_confirmed):
        return EnergyReading("gpu", device, delta_j, "measured-counter", duration_s)

    why = _fallback_reason(start_mj, end_mj, delta_j, short, counter_period_s)
    span_s = points[-1][0] - points[0][0] if points else 0.0
    if len(points) >= 2 and span_s > 0:
        energy = integrate_power_j([t for t, _ in points], [p for _, p in points])
        detail = f"trapezoid over {len(points)} samples"
        if span_s < duration_s:
            # The sampler's first and last ticks fall inside the window, never on its edges.
            # Mean power first: `duration_s / span_s` overflows for a tiny span (0 × inf).
            energy = energy / span_s * duration_s
            detail += f" spanning {span_s:.3g} s, at their mean power over {duration_s:.3g} s"
        return EnergyReading(
            "gpu", device, energy, "integrated-power", duration_s, f"{detail}; {why}"
        )
    if points:
        mean_w = sum(p for _, p in points) / len(points)
        detail = f"{len(points)} power sample(s) at one instant × {duration_s:.3g} s; {why}"
        return EnergyReading(
            "gpu", device, mean_w * duration_s, "integrated-power", duration_s, detail
        )
    if delta_j is not None and delta_j > 0:
        detail = f"window shorter than the counter's {counter_period_s:g} s update period"
        return EnergyReading("gpu", device, delta_j, "measured-counter", duration_s, detail)
    return None


def _fallback_reason(
    start_mj: int | None,
    end_mj: int | None,
    delta_j: float | None,
    short: bool,
    counter_period_s: float,
) -> str:
    if start_mj is None or end_mj is None:
        return "no energy counter"
    if delta_j is None:
        return "energy counter went back (driver reload)"
    if short:
        return f"window shorter than the counter's {counter_period_s:g} s update period"
    return "energy counter did not advance"


def estimate_cpu_energy_j(cpu_time_s: float, watts_per_core: float) -> float:
    """Estimated CPU energy from process CPU seconds (user + system) over a window.

    CPU seconds are utilisation × wall time × cores, so this is the Green Algorithms model
    (cores × usage × power per core × time). It ignores idle and uncore power: a lower bound
    of the machine's draw, attributed to this process.
    """
    if not math.isfinite(cpu_time_s) or cpu_time_s < 0:
        raise ValueError(f"cpu_time_s must be a finite number ≥ 0, got {cpu_time_s!r}")
    if not math.isfinite(watts_per_core) or watts_per_core <= 0:
        raise ValueError(f"watts_per_core must be a finite number > 0, got {watts_per_core!r}")
    return cpu_time_s * watts_per_core


@dataclass(frozen=True, slots=True)
class _RaplDomain:
    device: str
    energy_path: Path
    max_energy_range_uj: int


class RaplReader:
    """CPU package energy from the Linux powercap class (RAPL; Intel, and AMD since Zen).

    Only top-level package domains (`intel-rapl:N`) are read: their subdomains (core, uncore,
    dram) are parts of the package, and `psys` overlaps it, so adding them would double-count.
    Since Linux 5.10 `energy_uj` is readable only by root (CVE-2020-8694); then, and on VMs
    without RAPL, `available` is False.
    """

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        self._domains = self._discover(root)

    @staticmethod
    def _discover(root: Path) -> tuple[_RaplDomain, ...]:
        try:
            entries = list(root.iterdir())
        except OSError:
            return ()
        found: list[tuple[int, _RaplDomain]] = []
        for entry in entries:
            match = _RAPL_PACKAGE.fullmatch(entry.name)
            if match is None:
                continue
            try:
                name_file = entry / "name"
                name = name_file.read_text().strip() if name_file.exists() else "package"
                if not name.startswith("package"):
                    continue
                max_range = int((entry / "max_energy_range_uj").read_text())
                int((entry / "energy_uj").read_text())  # readable now, or not at all
            except (OSError, ValueError):
                continue
            if name == "package":
                name = f"package-{match.group(1)}"
            found.append(
                (int(match.group(1)), _RaplDomain(f"cpu-{name}", entry / "energy_uj", max_range))
            )
        return tuple(domain for _, domain in sorted(found, key=lambda item: item[0]))

    @property
    def available(self) -> bool:
        """Whether at least one package counter can be read."""
        return bool(self._domains)

    @property
    def devices(self) -> tuple[str, ...]:
        """Device names of the readable packages, e.g. ("cpu-package-0", "cpu-package-1")."""
        return tuple(domain.device for domain in self._domains)

    def read_uj(self) -> dict[str, int]:
        """Each package's counter in microjoules; a package that fails to read is left out."""
        readings = {}
        for domain in self._domains:
            try:
                readings[domain.device] = int(domain.energy_path.read_text())
            except (OSError, ValueError):
                continue
        return readings

    def delta_j(self, start: Mapping[str, int], end: Mapping[str, int]) -> dict[str, float]:
        """Joules per package between two `read_uj()` results, across one counter wrap.

        The counter wraps at `max_energy_range_uj` (typically 262 kJ: half an hour at 150 W), so
        a window longer than one wrap period needs reads in between to be right.
        """
        deltas = {}
        for domain in self._domains:
            if domain.device not in start or domain.device not in end:
                continue
            delta = end[domain.device] - start[domain.device]
            if delta < 0:
                delta += domain.max_energy_range_uj
            deltas[domain.device] = delta / 1e6
        return deltas

    def readings(
        self, start: Mapping[str, int], end: Mapping[str, int], duration_s: float
    ) -> tuple[EnergyReading, ...]:
        """`delta_j` as `EnergyReading`s with method `rapl`."""
        return tuple(
            EnergyReading("cpu", device, energy_j, "rapl", duration_s)
            for device, energy_j in self.delta_j(start, end).items()
        )
