"""papermill's injected parameters become the runs' parameters (source `injected`), in a real
papermill run and through `jupyter-prov4ml run NB -p NAME VALUE`; read back from the runs'
PROV-JSON with `prov`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from prov.model import ProvEntity

from conftest import cli, closed_runs, deserialize_strict
from jupyter_prov4ml.settings import STORE_ENV

pytestmark = pytest.mark.kernel

TRAIN = "%%provrun --no-graph --no-live\nw = 0.0\nfor _ in range(epochs):\n    w += lr\n"


def _notebook(path: Path, with_parameters_cell: bool = True) -> None:
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("lr = 0.1\nepochs = 2\nname = 'base'\n")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_prov4ml")]
    nb.cells += [parameters] if with_parameters_cell else []
    nb.cells += [nbformat.v4.new_code_cell(TRAIN), nbformat.v4.new_code_cell(TRAIN)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def _provruns(store: Path) -> list[dict[str, Any]]:
    return [run for run in closed_runs(store) if run["kind"] == "provrun"]


def _prov_params(store: Path, run_id: str) -> dict[str, tuple[Any, str]]:
    """The run's Parameter entities as read back by `prov`: name → (value, source)."""
    (path,) = store.glob(f"sessions/*/runs/{run_id}.prov.json")
    doc = deserialize_strict(path)
    found = {}
    for entity in doc.get_records(ProvEntity):
        values = {str(k.localpart): v for k, v in entity.attributes}
        if str(values.get("type", "")).endswith("Parameter"):
            found[values["name"]] = (values["value"], values["source"])
    return found


def test_a_real_papermill_run_records_its_injected_parameters(tmp_path: Path) -> None:
    """`papermill NB OUT -p lr 0.3 -p name fast`: every %%provrun of the session has lr=0.3
    (a float, as papermill typed it) and name='fast' marked `injected`, and not the default
    of the parameters cell."""
    pytest.importorskip("papermill")
    notebook = tmp_path / "train.ipynb"
    _notebook(notebook)
    store = tmp_path / "store"
    papermill = [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "out.ipynb")]
    done = subprocess.run(
        [*papermill, "-p", "lr", "0.3", "-p", "name", "fast"],
        cwd=tmp_path,
        env={**os.environ, STORE_ENV: str(store)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _provruns(store)
    assert len(runs) == 2
    for run in runs:
        params = {p["name"]: (p["value"], p["source"]) for p in run["params"]}
        assert params["lr"] == (0.3, "injected")
        assert params["name"] == ("fast", "injected")
        # papermill injects only what was given; `w` is working state, not a parameter
        assert set(params) == {"lr", "name"}
        from_prov = _prov_params(store, run["run_id"])
        assert from_prov["lr"] == (0.3, "injected")
        assert from_prov["name"] == ("fast", "injected")


def test_cli_run_injects_parameters_as_papermill_does(tmp_path: Path) -> None:
    """`jupyter-prov4ml run NB -p lr 0.3 -p epochs 3`: values typed as papermill types them,
    injected after the `parameters` cell (the executed notebook shows the tagged cell), and
    recorded as injected parameters of the runs; the body saw them (w = 0.9)."""
    notebook = tmp_path / "train.ipynb"
    _notebook(notebook)
    store = tmp_path / "store"
    executed = tmp_path / "executed.ipynb"
    done = cli(
        "run", str(notebook), "-o", str(executed), "--store", str(store),
        "-p", "lr", "0.3", "-p", "epochs", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(executed, as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    assert tags[1] == ["parameters"] and tags[2] == ["injected-parameters"]
    assert nb.cells[2].source.startswith("# Parameters")
    runs = _provruns(store)
    assert len(runs) == 2
    for run in runs:
        params = {p["name"]: (p["value"], p["source"]) for p in run["params"]}
        assert params["lr"] == (0.3, "injected") and params["epochs"] == (3, "injected")
        assert _prov_params(store, run["run_id"])["epochs"] == (3, "injected")


def test_injected_cell_before_the_load_is_still_seen(tmp_path: Path) -> None:
    """A notebook with no `parameters` cell: papermill puts the injected cell first, before
    `%load_ext`; the runs still get its values (read from the kernel's input history)."""
    notebook = tmp_path / "plain.ipynb"
    _notebook(notebook, with_parameters_cell=False)
    store = tmp_path / "store"
    done = cli(
        "run", str(notebook), "-o", str(tmp_path / "x.ipynb"), "--store", str(store),
        "-p", "lr", "0.5", "-p", "epochs", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for run in _provruns(store):
        params = {p["name"]: (p["value"], p["source"]) for p in run["params"]}
        assert params["lr"] == (0.5, "injected")
