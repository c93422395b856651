"""Comparing two runs (`diff_runs`, `%prov diff`, `jupyter-prov4ml diff`): parameters, code,
metrics, cost and environment, on runs recorded by a real shell."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from conftest import closed_runs, extension_of
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.views.run_diff import RunDiff, diff_runs

TRAIN = """%%provrun --name sweep --param lr=0.01 --no-graph --no-live
from jupyter_prov4ml import log_metric
batch_size = {batch_size}
epochs = 3
for epoch in range(epochs):
    log_metric("loss", 1.0 / (epoch + 1) / batch_size, step=epoch)
"""


def record(shell: Any, *sources: str) -> list[str]:
    """Run the cells in a real shell and return their run ids, in order."""
    before = len(closed_runs_of(shell))
    for source in sources:
        result = shell.run_cell(source, store_history=True)
        assert result.error_in_exec is None or "raise" in source
    assert extension_of(shell).writer.flush(timeout_s=30)
    return [run["run_id"] for run in closed_runs_of(shell)[before:]]


def closed_runs_of(shell: Any) -> list[dict[str, Any]]:
    return closed_runs(extension_of(shell).store.root)


@pytest.fixture
def sweep(loaded: Any) -> tuple[Store, str, str]:
    """Two %%provrun runs of one cell that differ in exactly one parameter (batch_size)."""
    a, b = record(loaded, TRAIN.format(batch_size=64), TRAIN.format(batch_size=128))
    return extension_of(loaded).store, a, b


def test_one_parameter_changed_shows_exactly_that(sweep: tuple[Store, str, str]) -> None:
    """Two runs differing in one literal: the diff lists exactly that parameter as changed, the
    code diff shows the changed line, and the environment (same kernel) is the same."""
    store, a, b = sweep
    difference = diff_runs(store.find(a), store.find(b), store)
    assert [(p.name, p.a, p.b, p.change) for p in difference.changed_params] == [
        ("batch_size", 64, 128, "changed")
    ]
    assert {p.name for p in difference.params} == {"lr", "batch_size", "epochs"}
    changed_lines = [
        line
        for line in difference.code_diff
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed_lines == ["-batch_size = 64", "+batch_size = 128"]
    assert difference.code_diff[0].startswith("--- A ") and a in difference.code_diff[0]
    assert difference.changed_environment == ()
    assert difference.environment, "both runs have their session's environment"
    text = repr(difference)
    assert "1 changed, 0 added, 0 removed, 2 same" in text
    assert "~ batch_size: 64 -> 128" in text
    assert "-batch_size = 64" in text and "environment: the same" in text


def test_metrics_duration_and_energy_side_by_side(sweep: tuple[Store, str, str]) -> None:
    """Metric summaries of both runs are paired by name and context; duration, CPU time and
    energy of both are shown."""
    store, a, b = sweep
    run_a, run_b = store.find(a), store.find(b)
    difference = diff_runs(run_a, run_b, store)
    (loss,) = difference.metrics
    assert (loss.name, loss.context, loss.change) == ("loss", "training", "changed")
    assert loss.a is not None and loss.b is not None
    assert loss.a.last == pytest.approx(1 / 3 / 64) and loss.b.last == pytest.approx(1 / 3 / 128)
    outcome = {o.name: o for o in difference.outcome}
    assert outcome["status"].change == "same"
    assert outcome["duration_s"].a == run_a.run.wall_time_s
    assert outcome["duration_s"].b == run_b.run.wall_time_s
    assert run_a.run.energy is not None
    assert outcome["energy_j"].a == pytest.approx(run_a.run.energy.total_j)
    assert "loss [training]" in repr(difference)


def test_added_and_removed_parameters(loaded: Any) -> None:
    """A parameter only B has is `added`, one only A has is `removed`; a value that changes
    type (1 → 1.0) is a change."""
    a, b = record(
        loaded,
        "%%provrun --param old=1 --param same=2 --param kind=1 --no-graph --no-live\npass\n",
        "%%provrun --param new=3 --param same=2 --param kind=1.0 --no-graph --no-live\npass\n",
    )
    store = extension_of(loaded).store
    difference = diff_runs(store.find(a), store.find(b), store)
    changes = {p.name: p.change for p in difference.params}
    assert changes == {"old": "removed", "same": "same", "kind": "changed", "new": "added"}
    assert "+ new: — -> 3" in repr(difference) and "- old: 1 -> —" in repr(difference)


def test_environment_differences(sweep: tuple[Store, str, str]) -> None:
    """Runs from different machines: host, GPUs and package versions that differ are listed,
    the rest are the same."""
    store, a, b = sweep
    run_a, run_b = store.find(a), store.find(b)
    assert run_a.session is not None
    elsewhere = dataclasses.replace(
        run_a.session,
        hostname="gpu-node-7",
        gpus=("NVIDIA H100 80GB HBM3",),
        software=(*((n, "0.0.1" if n == "prov" else v) for n, v in run_a.session.software),),
    )
    difference = diff_runs(run_a, dataclasses.replace(run_b, session=elsewhere), store)
    changed = {e.name: (e.a, e.b) for e in difference.changed_environment}
    assert set(changed) == {"host", "gpus", "package prov"}
    assert changed["host"] == (run_a.session.hostname, "gpu-node-7")
    assert changed["gpus"][1] == "NVIDIA H100 80GB HBM3"
    assert "environment:" in repr(difference) and "gpu-node-7" in repr(difference)


def test_html_is_side_by_side_with_changes_highlighted(sweep: tuple[Store, str, str]) -> None:
    """The HTML form is a table with a column per run; the changed parameter's row and the
    changed code lines are highlighted, unchanged rows are not."""
    store, a, b = sweep
    page = diff_runs(store.find(a), store.find(b), store)._repr_html_()
    assert f"A: <code>{a} (sweep)</code>" in page and f"B: <code>{b} (sweep)</code>" in page
    changed_rows = [row for row in page.split("<tr") if "jp-prov4ml-changed" in row]
    assert any("<td>batch_size</td><td>64</td><td>128</td>" in row for row in changed_rows)
    assert not any("<td>lr</td>" in row for row in changed_rows)
    assert "background:#fbe0e0'>-batch_size = 64</span>" in page
    assert "background:#e2f5e2'>+batch_size = 128</span>" in page


def test_prov_diff_magic(sweep: tuple[Store, str, str], loaded: Any) -> None:
    """`%prov diff A B` (ids or unique ends of ids) gives the RunDiff; a wrong number of runs
    or an unknown run is a UsageError."""
    _, a, b = sweep
    difference = loaded.run_line_magic("prov", f"diff {a[-5:]} {b}")
    assert isinstance(difference, RunDiff)
    assert [p.name for p in difference.changed_params] == ["batch_size"]
    with pytest.raises(UsageError, match="RUN_A RUN_B"):
        loaded.run_line_magic("prov", f"diff {a}")
    with pytest.raises(UsageError, match="no run 'nope'"):
        loaded.run_line_magic("prov", f"diff {a} nope")


def test_prov_diff_displays_in_a_cell(sweep: tuple[Store, str, str], loaded: Any) -> None:
    """Run as a cell, `%prov diff` is the cell's result, which the kernel shows as HTML with a
    text fallback."""
    _, a, b = sweep
    result = loaded.run_cell(f"%prov diff {a} {b}", store_history=True)
    assert result.success and isinstance(result.result, RunDiff)
    bundle, _ = loaded.display_formatter.format(result.result)
    assert "jp-prov4ml-rundiff" in bundle["text/html"]
    assert "batch_size: 64 -> 128" in bundle["text/plain"]


def test_cli_diff_text_and_json(sweep: tuple[Store, str, str], capsys: Any) -> None:
    """`jupyter-prov4ml diff A B` prints the text form; `--json` is strict JSON with the same
    facts; an unknown run exits 2 with one line."""
    store, a, b = sweep
    capsys.readouterr()
    assert main(["diff", a, b]) == 0
    assert "~ batch_size: 64 -> 128" in capsys.readouterr().out
    assert main(["diff", a, b, "--json"]) == 0
    data = json.loads(
        capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")
    )
    assert [p for p in data["params"] if p["change"] != "same"] == [
        {"name": "batch_size", "a": 64, "b": 128, "change": "changed"}
    ]
    assert data["a"]["run_id"] == a and data["b"]["run_id"] == b
    assert "+batch_size = 128" in data["code_diff"]
    assert data["metrics"][0]["a"]["count"] == 3
    assert Path(store.root / data["a"]["prov_path"]).is_file()
    assert main(["diff", a, "nope"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"jupyter-prov4ml: no run 'nope' in {store.root}"
    ]


def test_plain_cells_diff_code_only(loaded: Any) -> None:
    """Two plain cells: no parameters, no metrics, the code diff and their timing."""
    a, b = record(loaded, "x = 1\ny = 2", "x = 1\ny = 3")
    store = extension_of(loaded).store
    difference = diff_runs(store.find(a), store.find(b))
    assert difference.params == () and difference.metrics == ()
    assert "-y = 2" in difference.code_diff and "+y = 3" in difference.code_diff
    assert {o.name for o in difference.outcome} >= {"status", "duration_s", "cpu_time_s"}
    same = diff_runs(store.find(a), store.find(a))
    assert same.code_diff == () and "code: the same" in repr(same)
