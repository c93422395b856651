"""`%prov tag | note | list --tag | verify | annotate` in a real IPython shell whose notebook
path is known (as JupyterLab tells a kernel), with the notebook saved as a front end would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from conftest import extension_of

CELLS = [("c-load", "%load_ext jupyter_prov4ml"), ("c-a", "a = 1"), ("c-b", "b = a + 1")]


def notebook_json(cells: list[tuple[str, str, int | None]]) -> dict[str, Any]:
    """An nbformat 4.5 notebook with code cells (id, source, execution count)."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": cell_id,
                "source": source,
                "execution_count": count,
                "metadata": {},
                "outputs": [],
            }
            for cell_id, source, count in cells
        ],
    }


@pytest.fixture
def notebook_shell(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Path, list[int]]:
    """A shell serving `study.ipynb`, whose cells ran top to bottom (cell ids sent); the
    notebook saved with their execution counts."""
    path = tmp_path / "study.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    counts = []
    for cell_id, source in CELLS:
        result = shell.run_cell(source, store_history=True, cell_id=cell_id)
        assert result.success, result.error_in_exec
        counts.append(result.execution_count)
    cells = [
        (cell_id, source, count) for (cell_id, source), count in zip(CELLS, counts, strict=True)
    ]
    path.write_text(json.dumps(notebook_json(cells)))
    return shell, path, counts


def test_verify_the_open_notebook(notebook_shell: tuple[Any, Path, list[int]]) -> None:
    """`%prov verify` checks the notebook the kernel serves: clean as saved, not clean once
    a cell's source is edited in the saved file."""
    shell, path, _ = notebook_shell
    report = shell.run_line_magic("prov", "verify")
    assert report.clean, repr(report)
    saved = json.loads(path.read_text())
    saved["cells"][2]["source"] = "b = a + 2"
    path.write_text(json.dumps(saved))
    report = shell.run_line_magic("prov", "verify")
    assert not report.clean
    assert "cell 3 (id 'c-b')" in repr(report)


def test_verify_without_a_known_notebook_is_a_usage_error(loaded: Any) -> None:
    """A kernel that does not know its notebook says so instead of guessing."""
    with pytest.raises(UsageError, match="path is unknown"):
        loaded.run_line_magic("prov", "verify")


def test_verify_a_broken_notebook_file_is_a_usage_error(
    notebook_shell: tuple[Any, Path, list[int]],
) -> None:
    """A saved notebook that is not JSON gives one clear error, not a traceback."""
    shell, path, _ = notebook_shell
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not a notebook"):
        shell.run_line_magic("prov", "verify")


def test_annotate_writes_figures_into_the_saved_notebook(
    notebook_shell: tuple[Any, Path, list[int]], capsys: Any
) -> None:
    """`%prov annotate` puts each recorded cell's wall time under its metadata, replacing
    the file in one piece and keeping its mode."""
    shell, path, counts = notebook_shell
    path.chmod(0o640)
    shell.run_line_magic("prov", "annotate")
    assert "wrote the figures of 2 cell(s)" in capsys.readouterr().out
    saved = json.loads(path.read_text())
    figures = [cell["metadata"].get("jupyter_prov4ml") for cell in saved["cells"]]
    assert figures[0] is None
    assert figures[1]["execution_count"] == counts[1] and figures[1]["wall_time_s"] >= 0
    assert figures[2]["status"] == "ok"
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(path.parent.glob(".study.ipynb.*"))


def test_tag_note_and_list_by_tag(loaded: Any, capsys: Any) -> None:
    """Runs tagged with `%prov tag` are what `%prov list --tag` shows; notes are recorded."""
    for name in ("one", "two"):
        assert loaded.run_cell(f"%%provrun --name {name} --no-graph --no-live\nx = 1").success
    extension_of(loaded).flush()
    runs = extension_of(loaded).store.query()
    first = next(run for run in runs if run.name == "one").run_id
    loaded.run_line_magic("prov", f"tag {first[-5:]} best paper")
    assert f"{first}: best, paper" in capsys.readouterr().out
    loaded.run_line_magic("prov", f'note {first} "lr 0.1 was too high"')
    table = loaded.run_line_magic("prov", "list --tag best")
    assert first in repr(table)
    assert "two" not in repr(table)
    notes = extension_of(loaded).store.annotations().notes[first]
    assert [note.text for note in notes] == ["lr 0.1 was too high"]
    with pytest.raises(UsageError):
        loaded.run_line_magic("prov", "tag")
    with pytest.raises(UsageError, match="not a tag"):
        loaded.run_line_magic("prov", f"tag {first} '<b>'")
