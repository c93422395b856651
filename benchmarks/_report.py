"""What a benchmark reports (`Result`), how repeats are taken (`interleave`), and the table.

Every figure is a median of several repeats, and every baseline is measured in the same run as
its subject, interleaved with it, so a noisy shared VM slows both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


class BenchmarkError(RuntimeError):
    """The benchmark could not measure what it set out to (e.g. the extension failed to load)."""


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure against its target.

    `value` is the subject's median and `baseline` the median of what it is compared with,
    both in `unit`. The target bounds `value - baseline` when `target_is_overhead`, else
    `value` itself. `target`/`passed` are None for figures reported without a target.
    """

    name: str
    value: float
    unit: str
    baseline: float | None
    target: float | None
    passed: bool | None
    target_is_overhead: bool = True
    note: str = ""

    @property
    def overhead(self) -> float | None:
        return None if self.baseline is None else self.value - self.baseline

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline <= 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "INFO"
        return "PASS" if self.passed else "FAIL"


def checked(
    name: str,
    value: float,
    unit: str,
    baseline: float | None,
    target: float | None,
    *,
    target_is_overhead: bool = True,
    note: str = "",
) -> Result:
    """A Result whose verdict is computed from the target (None: no target, INFO)."""
    passed: bool | None = None
    if target is not None:
        if target_is_overhead:
            if baseline is None:
                raise ValueError(f"{name}: an overhead target needs a baseline")
            passed = value - baseline <= target
        else:
            passed = value <= target
    return Result(name, value, unit, baseline, target, passed, target_is_overhead, note)


def median(samples: Iterable[float]) -> float:
    values = list(samples)
    if not values:
        raise BenchmarkError("no samples were taken")
    return statistics.median(values)


def interleave(arms: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each arm once per round, reversing the order every other round (A B, B A, ...),
    so that drift in machine speed and any order effect land on every arm equally."""
    names = list(arms)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(arms[name]())
    return samples


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cells(result: Result) -> list[str]:
    unit = result.unit
    overhead = result.overhead
    ratio = result.ratio
    if result.target is None:
        target = "-"
    elif result.target_is_overhead:
        target = f"+{_number(result.target)} {unit}"
    else:
        target = f"<= {_number(result.target)} {unit}"
    return [
        result.name,
        f"{_number(result.value)} {unit}",
        "-" if result.baseline is None else f"{_number(result.baseline)} {unit}",
        "-" if overhead is None else f"{'+' if overhead >= 0 else ''}{_number(overhead)} {unit}",
        "-" if ratio is None else f"{ratio:.2f}x",
        target,
        result.verdict,
    ]


def format_table(results: Iterable[Result]) -> str:
    """A plain-text table; the target column bounds `overhead` when it starts with '+'."""
    results = list(results)
    header = ["benchmark", "measured", "baseline", "overhead", "ratio", "target", "result"]
    rows = [header] + [_cells(result) for result in results]
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        first, *numbers, verdict = row
        cells = [first.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(numbers, widths[1:-1], strict=True)]
        cells.append(verdict)
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    notes = [f"  {result.name}: {result.note}" for result in results if result.note]
    if notes:
        lines += ["", "notes:", *notes]
    failed = [result.name for result in results if result.passed is False]
    lines.append("")
    lines.append(f"FAIL: {', '.join(failed)}" if failed else "all targets met")
    return "\n".join(lines)


def print_report(results: Iterable[Result], started: float | None = None) -> None:
    print(format_table(results))
    if started is not None:
        print(f"(took {time.perf_counter() - started:.0f} s)")
