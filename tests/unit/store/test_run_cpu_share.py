"""The run record's `kernel_cpu_time_s` (the kernel's share of a process tree's CPU): encoded,
decoded, absent from older journal lines, refused when it is not a number."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from jupyter_prov4ml.records import CellRef, CellRun
from jupyter_prov4ml.store.codec import encode_line, run_from_dict, run_to_dict


def _run() -> CellRun:
    return CellRun(
        "s-00001", "s", "provrun", CellRef("ab" * 32, "x = 1"), 1.7e9, 1.7e9 + 2, 2.0, 3.5, "ok"
    )


def test_the_kernel_share_round_trips_and_old_lines_read_as_none() -> None:
    """A run with the field reads back equal; a line written before it existed reads as
    None (the run's CPU was the kernel's alone)."""
    run = replace(_run(), kernel_cpu_time_s=0.25)
    line = json.loads(encode_line("close", {"run": run_to_dict(run)}))["run"]
    assert run_from_dict(line) == run
    del line["kernel_cpu_time_s"]
    assert run_from_dict(line).kernel_cpu_time_s is None


@pytest.mark.parametrize("bad", ["0.25", True, [1]])
def test_a_kernel_share_that_is_not_a_number_is_a_damaged_line(bad: object) -> None:
    """Stored data is untrusted: a non-number raises TypeError (one damaged line)."""
    line = run_to_dict(_run())
    line["kernel_cpu_time_s"] = bad
    with pytest.raises(TypeError):
        run_from_dict(line)
