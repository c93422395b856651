"""`track(iterable)`: training-loop iterations as step windows.

Each iteration of a loop tracked at depth < `step_depth` (by default only the outermost) is a
step; deeper tracked loops (batches) are only counted into the step that contains them, so a
run has one activity per epoch, not thousands per batch. On the hot path a step costs a few
clock reads and one append; everything else is computed when the run closes.
"""

from __future__ import annotations

import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class OpenStep:
    loop: str
    index: int
    started_unix_s: float
    started_ns: int
    started_cpu_ns: int
    inner: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RawStep:
    """A finished step's window, before hardware and energy are attached at run close."""

    loop: str
    index: int
    started_unix_s: float
    started_ns: int
    ended_ns: int
    cpu_time_s: float
    inner_iterations: tuple[tuple[str, int], ...]
    completed: bool


@dataclass(slots=True)
class Progress:
    """The outermost loop's progress, read by the live view from the sampler thread."""

    loop: str
    total: int | None
    started_ns: int
    done: int = 0


def cheap_length(iterable: object) -> int | None:
    """`len(iterable)` where that runs no Python code of the user's (a `__len__` written in
    Python may be slow, or raise): lists, ranges, arrays, tensors... Else None: pass `total=`."""
    length = getattr(type(iterable), "__len__", None)
    if length is None or isinstance(length, types.FunctionType):
        return None
    try:
        count = len(iterable)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a C-level __len__ may raise too; the loop must run
        return None
    return count if count >= 0 else None


class LoopTracker:
    """The tracked loops of one run (main thread)."""

    def __init__(self, step_depth: int = 1) -> None:
        self.step_depth = max(1, step_depth)
        self.steps: list[RawStep] = []
        # each stepped loop's length where known (the first `track` of a name says it)
        self.lengths: dict[str, int | None] = {}
        self.progress: Progress | None = None
        self._open: list[OpenStep] = []
        self._depth = 0

    def track(self, iterable: Iterable[T], name: str, total: int | None) -> Iterator[T]:
        if total is None or total < 0:
            total = cheap_length(iterable)
        return self._iterate(iterable, name, total)

    def _iterate(self, iterable: Iterable[T], name: str, total: int | None) -> Iterator[T]:
        depth = self._depth
        self._depth += 1
        try:
            if depth >= self.step_depth:
                for item in iterable:
                    if self._open:
                        inner = self._open[-1].inner
                        inner[name] = inner.get(name, 0) + 1
                    yield item
                return
            progress = Progress(name, total, time.perf_counter_ns())
            self.lengths.setdefault(name, total)
            if depth == 0:
                self.progress = progress
            for index, item in enumerate(iterable):
                step = OpenStep(
                    name, index, time.time(), time.perf_counter_ns(), time.process_time_ns()
                )
                self._open.append(step)
                try:
                    yield item
                except GeneratorExit:
                    # The loop was left early (break, an exception): the step ends here.
                    self._close(step, completed=False)
                    raise
                self._close(step, completed=True)
                progress.done = index + 1
        finally:
            self._depth -= 1

    def begin_step(self, name: str, index: int, total: int | None = None) -> OpenStep:
        """Open a step whose loop is not iterated through `track`: a framework's epoch, begun
        and ended by its callbacks. It is a step whatever `step_depth` says (a framework calls
        back once per epoch, never per batch); close it with `end_step`."""
        self.lengths.setdefault(name, total)
        step = OpenStep(name, index, time.time(), time.perf_counter_ns(), time.process_time_ns())
        # The live view follows the outermost loop: a framework's, unless `track` runs one.
        progress = self.progress
        if self._depth == 0 and not self._open and (progress is None or progress.loop != name):
            self.progress = Progress(name, total, step.started_ns)
        self._open.append(step)
        return step

    def end_step(self, step: OpenStep, completed: bool = True) -> None:
        """Close a step opened by `begin_step` (once; later calls do nothing)."""
        self._close(step, completed)
        progress = self.progress
        if completed and progress is not None and progress.loop == step.loop:
            progress.done = step.index + 1

    def count_inner(self, name: str) -> None:
        """Count one iteration of an inner loop (a framework's batch) into the open step."""
        if self._open:
            inner = self._open[-1].inner
            inner[name] = inner.get(name, 0) + 1

    def _close(self, step: OpenStep, completed: bool) -> None:
        if step not in self._open:
            return  # already closed by finish()
        self._open.remove(step)
        self.steps.append(
            RawStep(
                step.loop,
                step.index,
                step.started_unix_s,
                step.started_ns,
                time.perf_counter_ns(),
                (time.process_time_ns() - step.started_cpu_ns) / 1e9,
                tuple(step.inner.items()),
                completed,
            )
        )

    def finish(self) -> None:
        """Close steps still open when the run ends (a failed or interrupted cell)."""
        for step in reversed(list(self._open)):
            self._close(step, completed=False)
