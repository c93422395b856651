"""Records that used to be wrong, through the magic in a real shell: loop totals past the
documented steps, CPU % of short runs, nested %%provrun, and `track` on objects whose
`len` misbehaves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs, displayed, extension_of


def _provruns(shell: Any, store: Path) -> list[dict[str, Any]]:
    assert extension_of(shell).writer.flush(timeout_s=60)
    return [r for r in closed_runs(store) if r["kind"] == "provrun"]


def _summary_text(shell: Any) -> str:
    return "\n".join(str(d.get("text/plain", "")) for d in displayed(shell))


@pytest.mark.parametrize("steps", [10, 2_000])
def test_loop_summary_counts_every_step_and_the_loop_length(
    loaded: Any, store_dir: Path, steps: int
) -> None:
    """2,000 epochs: the summary says `2,000 completed of 2,000`, not `1000 of 1000` (the
    document describes 1,000 of them); the record keeps the per-loop totals."""
    cell = (
        "%%provrun --no-graph --no-live\n"
        "from jupyter_prov4ml import track\n"
        f"for epoch in track(range({steps}), name='epoch'):\n"
        "    pass\n"
    )
    assert loaded.run_cell(cell).success
    assert f"{steps:,} completed of {steps:,} (epoch)" in _summary_text(loaded)
    run = _provruns(loaded, store_dir)[-1]
    assert run["loops"] == [{"loop": "epoch", "steps": steps, "completed": steps, "length": steps}]
    assert run["steps_total"] == steps


def test_a_loop_left_early_counts_what_completed(loaded: Any, store_dir: Path) -> None:
    cell = (
        "%%provrun --no-graph --no-live\n"
        "from jupyter_prov4ml import track\n"
        "for epoch in track(range(50), name='epoch'):\n"
        "    if epoch == 20:\n"
        "        break\n"
    )
    assert loaded.run_cell(cell).success
    assert "20 completed of 50 (epoch)" in _summary_text(loaded)


def test_cpu_percent_of_short_runs_is_never_above_the_cores(loaded: Any, store_dir: Path) -> None:
    """Twenty `%%provrun pass` cells (sub-millisecond windows): no CPU figure above 100 % ×
    the logical cores reaches the record, summary or PROV."""
    for _ in range(20):
        assert loaded.run_cell("%%provrun --no-graph --no-live --interval 0.001\npass").success
    limit = 100.0 * (os.cpu_count() or 1)
    for run in _provruns(loaded, store_dir):
        hardware = dict((name, summary) for name, summary in run["hardware"]["series"])
        cpu = hardware.get("process_cpu_percent")
        if cpu is not None:
            assert cpu["max"] <= limit and cpu["mean"] <= limit


def test_a_nested_provrun_is_refused_in_one_line(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """A %%provrun whose body runs another: the inner body runs, one line says it is part of
    the outer run, and the journal holds one run with one close (no shared, lost run)."""
    capsys.readouterr()
    cell = (
        "%%provrun --no-graph --no-live --name outer\n"
        "inner_ran = False\n"
        "get_ipython().run_cell_magic('provrun', '--no-graph --name inner', "
        "'inner_ran = True')\n"
    )
    assert loaded.run_cell(cell).success
    assert loaded.user_ns["inner_ran"] is True
    err = capsys.readouterr().err
    assert err.count("inside a %%provrun") == 1 and "Traceback" not in err
    runs = _provruns(loaded, store_dir)
    assert [r["name"] for r in runs] == ["outer"]
    ids = [r["run_id"] for r in closed_runs(store_dir)]
    assert len(ids) == len(set(ids))


def test_a_failing_nested_provrun_fails_the_cell_once(loaded: Any, store_dir: Path) -> None:
    cell = "%%provrun --no-graph --no-live\nget_ipython().run_cell_magic('provrun', '', '1 / 0')\n"
    result = loaded.run_cell(cell)
    assert isinstance(result.error_in_exec, ZeroDivisionError)


@pytest.mark.parametrize(
    "sized",
    [
        "class Sized:\n    def __len__(self): raise NotImplementedError\n",
        "class Sized:\n    def __len__(self): return -3\n",
        "import time\nclass Sized:\n    def __len__(self): time.sleep(3600)\n",
    ],
    ids=["raises", "negative", "slow"],
)
def test_track_never_calls_a_python_len(loaded: Any, store_dir: Path, sized: str) -> None:
    """`track(x)` where `len(x)` raises, is negative or would take an hour: the loop runs as
    without `track` (our code never calls a `__len__` written in Python; pass `total=`)."""
    cell = (
        "%%provrun --no-graph --no-live\n"
        "from jupyter_prov4ml import track\n"
        + sized
        + "    def __iter__(self): return iter(range(3))\n"
        "seen = [i for i in track(Sized(), name='epoch')]\n"
    )
    result = loaded.run_cell(cell)
    assert result.success, result.error_in_exec
    assert loaded.user_ns["seen"] == [0, 1, 2]
    run = _provruns(loaded, store_dir)[-1]
    assert run["loops"] == [{"loop": "epoch", "steps": 3, "completed": 3, "length": None}]


@pytest.mark.parametrize("magic", ["%%provrun", "%prov list --name"])
def test_a_huge_magic_line_is_refused_before_it_is_split(
    loaded: Any, monkeypatch: pytest.MonkeyPatch, magic: str
) -> None:
    """A 1,000,000-character magic line is a UsageError that names the limit, decided before
    the line reaches IPython's argument splitter (whose time grows with its square)."""
    from IPython.core import magic_arguments

    split: list[int] = []
    real = magic_arguments.parse_argstring
    monkeypatch.setattr(
        magic_arguments, "parse_argstring", lambda f, s: split.append(len(s)) or real(f, s)
    )
    from jupyter_prov4ml.kernel import magics

    monkeypatch.setattr(magics, "parse_argstring", magic_arguments.parse_argstring)
    line = f"{magic} {'n' * 1_000_000}"
    result = loaded.run_cell(f"{line}\nx = 1" if magic.startswith("%%") else line)
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert "10,000" in str(result.error_in_exec)
    assert split == []
