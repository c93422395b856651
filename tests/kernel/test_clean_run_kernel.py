"""`jupyter-prov4ml verify` and the runner's cell figures, on notebooks run in real kernels:
headlessly top to bottom (clean), then edited, run out of order, or with a cell deleted."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import cli
from jupyter_prov4ml.cli.runner import CellIdNotebookClient, ensure_cell_ids
from jupyter_prov4ml.settings import STORE_ENV

pytestmark = pytest.mark.kernel

LOAD = "%load_ext jupyter_prov4ml"
PROVRUN = "%%provrun --no-graph --no-live\nc = b * 2\nc"


def write_notebook(path: Path, sources: list[str]) -> Any:
    """A notebook whose first cell is markdown and the others are code with `sources`."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a study")] + [
        nbformat.v4.new_code_cell(source) for source in sources
    ]
    ensure_cell_ids(nb)
    nbformat.write(nb, path)
    return nb


def run_in_order(path: Path, store: Path, order: list[int]) -> Any:
    """Execute the notebook's cells in a real kernel in `order` (cell indexes), as a person
    clicking cells in JupyterLab would (cell ids sent), and save it with its outputs."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "JPY_SESSION_NAME": str(path), STORE_ENV: str(store)}
    client = CellIdNotebookClient(nb, resources={"metadata": {"path": str(path.parent)}})

    async def execute() -> None:
        async with client.async_setup_kernel(env=env):
            for index in order:
                await client.async_execute_cell(nb.cells[index], index)

    asyncio.run(execute())
    nbformat.write(nb, path)
    return nb


def verify(notebook: Path, store: Path, *extra: str) -> Any:
    return cli("verify", str(notebook), "--store", str(store), *extra, cwd=notebook.parent)


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One notebook run top to bottom by `jupyter-prov4ml run`."""
    work = tmp_path_factory.mktemp("clean-run")
    notebook = work / "study.ipynb"
    write_notebook(notebook, [LOAD, "a = 1", "", "b = a + 1\nb", PROVRUN])
    store = work / "store"
    executed = work / "study.executed.ipynb"
    done = cli("run", str(notebook), "-o", str(executed), "--store", str(store), cwd=work)
    assert done.returncode == 0, done.stderr
    return {"work": work, "store": store, "executed": executed}


def test_a_clean_headless_run_verifies(headless: dict[str, Path]) -> None:
    """The executed notebook of a headless run is clean: exit 0, in text and in JSON."""
    done = verify(headless["executed"], headless["store"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("clean:")
    report = json.loads(verify(headless["executed"], headless["store"], "--json").stdout)
    assert report["clean"] is True
    assert report["cells_checked"] == 3  # the blank cell is skipped, the load cell not checked
    assert report["cells_not_checked"] == [2]


def test_runner_writes_each_cells_figures_into_its_metadata(headless: dict[str, Path]) -> None:
    """By default the runner leaves each recorded cell's wall time (and for %%provrun its
    energy) in the executed notebook's cell metadata, where a reopened notebook still has it."""
    nb = nbformat.read(headless["executed"], as_version=4)
    figures = [cell.metadata.get("jupyter_prov4ml") for cell in nb.cells]
    assert figures[0] is None and figures[1] is None and figures[3] is None
    for index in (2, 4, 5):
        assert figures[index]["wall_time_s"] >= 0
        assert figures[index]["execution_count"] == nb.cells[index].execution_count
    assert figures[5]["kind"] == "provrun"
    assert figures[5]["energy_j"] >= 0 and figures[5]["energy_method"]
    assert "energy_j" not in figures[2]


def test_runner_can_leave_metadata_alone(tmp_path: Path) -> None:
    """`--no-annotate` writes no figures into the executed notebook."""
    notebook = tmp_path / "n.ipynb"
    write_notebook(notebook, [LOAD, "a = 1"])
    executed = tmp_path / "out.ipynb"
    done = cli(
        "run", str(notebook), "-o", str(executed), "--store", str(tmp_path / "s"),
        "--no-annotate", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    nb = nbformat.read(executed, as_version=4)
    assert all("jupyter_prov4ml" not in cell.metadata for cell in nb.cells)


def test_an_edited_cell_fails_naming_the_cell(headless: dict[str, Path], tmp_path: Path) -> None:
    """A cell edited after the run (its output kept) fails the check: exit 1, naming the
    cell by position and id."""
    nb = nbformat.read(headless["executed"], as_version=4)
    nb.cells[4].source = "b = a + 2\nb"
    edited = tmp_path / "edited.ipynb"
    nbformat.write(nb, edited)
    done = verify(edited, headless["store"])
    assert done.returncode == 1
    assert f"cell 5 (id '{nb.cells[4].id}')" in done.stdout
    assert "edited" in done.stdout
    report = json.loads(verify(edited, headless["store"], "--json").stdout)
    assert report["problems"][0]["position"] == 5
    assert report["problems"][0]["cell_id"] == nb.cells[4].id


def test_an_out_of_order_run_fails_naming_the_cell(tmp_path: Path) -> None:
    """Cells run in the order 3, 2 (each on its own) fail at the cell that ran too early."""
    notebook = tmp_path / "n.ipynb"
    write_notebook(notebook, [LOAD, "a = 1", "b = 2", "c = a + b"])
    store = tmp_path / "store"
    nb = run_in_order(notebook, store, [1, 3, 2, 4])
    done = verify(notebook, store)
    assert done.returncode == 1, done.stdout
    assert f"cell 4 (id '{nb.cells[3].id}')" in done.stdout
    assert "out of order" in done.stdout


def test_reading_a_name_bound_below_fails(tmp_path: Path) -> None:
    """A cell that read a name bound only by a cell below it is the first offending cell."""
    notebook = tmp_path / "n.ipynb"
    write_notebook(notebook, [LOAD, "y = x + 1", "x = 1"])
    store = tmp_path / "store"
    nb = run_in_order(notebook, store, [1, 3, 2])
    report = json.loads(verify(notebook, store, "--json").stdout)
    assert report["clean"] is False
    first = report["problems"][0]
    assert (first["position"], first["cell_id"]) == (3, nb.cells[2].id)
    assert any("`x`" in reason and "below" in reason for reason in first["reasons"])


def test_reading_a_name_from_a_deleted_cell_fails(tmp_path: Path) -> None:
    """Outputs that depend on a cell since deleted from the notebook are not a clean run."""
    notebook = tmp_path / "n.ipynb"
    write_notebook(notebook, [LOAD, "x = 1", "y = x + 1"])
    store = tmp_path / "store"
    nb = run_in_order(notebook, store, [1, 2, 3])
    assert verify(notebook, store).returncode == 0
    del nb.cells[2]
    nbformat.write(nb, notebook)
    done = verify(notebook, store)
    assert done.returncode == 1
    assert "no longer in the notebook" in done.stdout
    assert f"cell 3 (id '{nb.cells[2].id}')" in done.stdout
