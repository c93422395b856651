"""Nothing lost when a headless kernel exits: the last cell of a notebook (a `%%provrun`) and
every cell before it are saved by nbconvert, papermill and nbclient, with pandas importable
in the kernel (pyarrow then imports it while saving, which fails at interpreter exit) and
without it, and the session closes cleanly (no lock left to be taken for a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import closed_runs
from jupyter_prov4ml.settings import STORE_ENV

pytestmark = pytest.mark.kernel

LAST_CELL = (
    "%%provrun --no-graph --no-live\n"
    "from jupyter_prov4ml import log_metric\n"
    "for i in range(100):\n"
    "    log_metric('loss', 1 / (i + 1), step=i)\n"
)
# Put first on the kernel's path: pandas cannot be imported there, as if not installed.
HIDE_PANDAS = """
import sys


class _HidePandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, _HidePandas())
"""


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_prov4ml"),
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell(LAST_CELL),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)


def _run(runner: str, notebook: Path, env: dict[str, str]) -> None:
    out = notebook.with_name("out.ipynb")
    commands = {
        "nbconvert": [
            sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
            str(notebook), "--output", str(out),
        ],
        "papermill": [sys.executable, "-m", "papermill", str(notebook), str(out)],
        "nbclient": [
            sys.executable,
            "-c",
            "import nbformat, nbclient, sys; nb = nbformat.read(sys.argv[1], 4); "
            "nbclient.NotebookClient(nb, kernel_name='python3').execute()",
            str(notebook),
        ],
    }  # fmt: skip
    result = subprocess.run(
        commands[runner],
        cwd=notebook.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("pandas", ["with pandas", "without pandas"])
@pytest.mark.parametrize("runner", ["nbconvert", "papermill", "nbclient"])
def test_last_cell_and_earlier_ones_survive_the_exit(
    runner: str, pandas: str, tmp_path: Path
) -> None:
    if runner == "papermill":
        pytest.importorskip("papermill")
    if pandas == "with pandas":
        pytest.importorskip("pandas")
    notebook = tmp_path / "last.ipynb"
    _notebook(notebook)
    store = tmp_path / "store"
    env = {**os.environ, STORE_ENV: str(store)}
    if pandas == "without pandas":
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text(HIDE_PANDAS)
        env["PYTHONPATH"] = os.pathsep.join([str(hide), env.get("PYTHONPATH", "")])
    _run(runner, notebook, env)
    runs = {run["cell"]["source"]: run for run in closed_runs(store)}
    assert "a = 1" in runs, sorted(runs)
    provrun = next((r for s, r in runs.items() if "log_metric('loss'" in s), None)
    assert provrun is not None, sorted(runs)
    assert provrun["status"] == "ok"
    assert [m["count"] for m in provrun["metrics"]] == [100]
    roles = {data["role"] for data in provrun["data_files"]}
    assert "metrics" in roles
    for data in provrun["data_files"]:
        assert (store / data["relpath"]).stat().st_size == data["size_bytes"]
    assert not list(store.glob("sessions/*/writer.lock")), "the session closed cleanly"
