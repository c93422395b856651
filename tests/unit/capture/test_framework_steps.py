"""The capture side of the framework integrations: loop steps opened and closed by callbacks,
a framework's reported status against the cell's own, folders identified as a whole."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from jupyter_prov4ml.capture.loops import LoopTracker
from jupyter_prov4ml.capture.run_capture import RunCapture, folder_sha256


def test_callback_steps_are_steps_with_their_batches() -> None:
    """`begin_step`/`end_step` make one step each, with its own clock and the inner
    iterations counted into it; the live view's progress follows; a second end is a no-op."""
    loops = LoopTracker(step_depth=1)
    for epoch in range(2):
        step = loops.begin_step("epoch", epoch, total=2)
        for _ in range(3):
            loops.count_inner("batch")
        time.sleep(0.001)
        loops.end_step(step)
        loops.end_step(step)
    assert [(s.loop, s.index, s.completed) for s in loops.steps] == [
        ("epoch", 0, True),
        ("epoch", 1, True),
    ]
    assert all(s.inner_iterations == (("batch", 3),) for s in loops.steps)
    assert all(s.ended_ns > s.started_ns for s in loops.steps)
    assert loops.progress is not None and (loops.progress.done, loops.progress.total) == (2, 2)
    assert loops.lengths == {"epoch": 2}


def test_a_step_left_open_ends_uncompleted_at_finish() -> None:
    """A step whose end was never called back (the fit raised) ends, not completed, with the run."""
    loops = LoopTracker()
    loops.begin_step("epoch", 0)
    loops.finish()
    assert [(s.index, s.completed) for s in loops.steps] == [(0, False)]


@pytest.mark.parametrize(
    ("cell", "reported", "recorded"),
    [
        (("ok", None), None, ("ok", None)),
        (("ok", None), ("ok", None), ("ok", None)),
        (("ok", None), ("failed", "lightning:failed"), ("failed", "lightning:failed")),
        (("failed", "ValueError"), ("failed", "lightning:failed"), ("failed", "ValueError")),
        (("failed", "ValueError"), ("ok", None), ("failed", "ValueError")),
        (
            ("failed", "SystemExit"),
            ("interrupted", "KeyboardInterrupt"),
            ("interrupted", "KeyboardInterrupt"),
        ),
        (
            ("interrupted", "KeyboardInterrupt"),
            ("failed", "x"),
            ("interrupted", "KeyboardInterrupt"),
        ),
    ],
)
def test_reported_status_against_the_cells(cell, reported, recorded) -> None:  # type: ignore[no-untyped-def]
    """A framework's failure shows where the cell hid it, its interruption beats the cell's
    failure, and its success never hides the cell's failure."""
    capture = RunCapture(0)
    if reported is not None:
        capture.report_status(*reported)
    assert capture.outcome(*cell) == recorded


def test_folder_sha256_is_over_sorted_lines(tmp_path: Path) -> None:
    """One `<sha256>  <size>  <path>` line per file, sorted by relative path; a link is
    named with its target, never followed; the size is the files' total."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.bin").write_bytes(b"zz")
    (tmp_path / "a.json").write_bytes(b"{}")
    os.symlink(tmp_path / "a.json", tmp_path / "c")
    lines = [
        f"{hashlib.sha256(b'{}').hexdigest()}  2  a.json",
        f"{hashlib.sha256(b'zz').hexdigest()}  2  b/z.bin",
        f"link  c -> {tmp_path / 'a.json'}",
    ]
    expected = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert folder_sha256(tmp_path) == (expected, 4)
    capture = RunCapture(0)
    artifact = capture.log_folder_artifact(tmp_path, "checkpoint-1")
    assert (artifact.name, artifact.sha256, artifact.size_bytes) == ("checkpoint-1", expected, 4)


def test_parameters_keep_their_source_and_are_redacted() -> None:
    """An integration's parameters say which framework gave them, and are redacted."""
    capture = RunCapture(0)
    capture.log_param("lr", 0.1, "lightning")
    capture.log_param("hub_token", "hf_abcdefghijklmnopqrstuvwxyz", "transformers")
    assert [(p.name, p.value, p.source) for p in capture.params] == [
        ("lr", 0.1, "lightning"),
        ("hub_token", "<redacted>", "transformers"),
    ]
