"""End to end through a real kernel: `jupyter-prov4ml run` on the quickstart notebook."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import REPO, cli, deserialize_strict

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Execute notebooks/quickstart.ipynb headlessly once for all tests of this module."""
    work = tmp_path_factory.mktemp("e2e")
    notebook = work / "quickstart.ipynb"
    notebook.write_bytes((REPO / "notebooks" / "quickstart.ipynb").read_bytes())
    store = work / "store"
    executed = work / "executed.ipynb"
    done = cli("run", str(notebook), "-o", str(executed), "--store", str(store), cwd=work)
    assert done.returncode == 0, done.stderr
    listing = cli("list", "--store", str(store), "--json", cwd=work)
    assert listing.returncode == 0, listing.stderr
    return {
        "notebook": nbformat.read(notebook, as_version=4),
        "executed": nbformat.read(executed, as_version=4),
        "store": store,
        "runs": json.loads(listing.stdout),
        "stdout": done.stdout,
        "work": work,
    }


def prov_type(element: dict[str, Any]) -> Any:
    """PROV-JSON writes a qualified-name type as {"$": name, "type": "prov:QUALIFIED_NAME"}."""
    value = element.get("prov:type")
    return value.get("$") if isinstance(value, dict) else value


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_every_code_cell_is_recorded_with_its_notebook_id(quickstart_run: dict[str, Any]) -> None:
    """Each executed code cell (after %load_ext) has one record whose sha256 is that of the
    cell's source and whose cell id is the notebook cell's `id`."""
    runs = quickstart_run["runs"]
    code_cells = [c for c in quickstart_run["notebook"].cells if c.cell_type == "code"]
    by_id = {run["cell_id"]: run for run in runs}
    assert len(by_id) == len(runs), "one record per executed cell"
    for cell in code_cells[1:]:  # the %load_ext cell itself ran before recording started
        run = by_id[cell.id]
        assert run["cell_sha256"] == sha(cell.source)
        assert run["status"] == "ok"
        assert run["notebook_path"].endswith("quickstart.ipynb")
    assert [r["kind"] for r in runs].count("provrun") == 1


def test_provrun_document_matches_the_notebook_cell(quickstart_run: dict[str, Any]) -> None:
    """The %%provrun PROV-JSON's cell entity carries the cell's sha256 and notebook id, and
    every PROV document in the store reads back with `prov` without a warning."""
    (provrun,) = [r for r in quickstart_run["runs"] if r["kind"] == "provrun"]
    cell = next(c for c in quickstart_run["notebook"].cells if c.source.startswith("%%provrun"))
    document = json.loads(Path(provrun["prov_path"]).read_text())
    cells = [e for e in document["entity"].values() if prov_type(e) == "p4m:CellVersion"]
    assert len(cells) == 1
    assert cells[0]["p4m:sha256"] == sha(cell.source)
    assert cells[0]["p4m:cell_id"] == cell.id
    params = {p for p in provrun["params"]}
    assert {"lr", "epochs", "hidden_units", "batch_size"} <= params
    documents = list(quickstart_run["store"].glob("sessions/*/**/*.prov.json"))
    assert documents
    for path in documents:
        deserialize_strict(path)
    # The plain cells' PROV, made from their journal lines on export, reads back too.
    work, store = quickstart_run["work"], quickstart_run["store"]
    (session,) = (path.name for path in store.glob("sessions/*"))
    out = work / "session.prov.json"
    done = cli("export", session, "--session", "--store", str(store), "-o", str(out), cwd=work)
    assert done.returncode == 0, done.stderr
    assert sha(cell.source) in out.read_text()
    deserialize_strict(out)


def test_executed_notebook_shows_summary_and_graph(quickstart_run: dict[str, Any]) -> None:
    """The executed notebook is saved with the run summary and the inline graph (or the DOT
    fallback) under the %%provrun cell, and no traceback anywhere."""
    cell = next(
        c for c in quickstart_run["executed"].cells if c.get("source", "").startswith("%%provrun")
    )
    html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
    assert "jp-prov4ml-summary" in html
    assert "jp-prov4ml-graph" in html or "digraph" in html
    for any_cell in quickstart_run["executed"].cells:
        for output in any_cell.get("outputs", []):
            assert output.get("output_type") != "error"


def test_export_formats_from_the_shell(quickstart_run: dict[str, Any]) -> None:
    """`jupyter-prov4ml export` writes PROV-JSON that `prov` reads and PROV-N text."""
    (provrun,) = [r for r in quickstart_run["runs"] if r["kind"] == "provrun"]
    work, store = quickstart_run["work"], str(quickstart_run["store"])
    out = work / "export.json"
    done = cli("export", provrun["run_id"], "--store", store, "-o", str(out), cwd=work)
    assert done.returncode == 0, done.stderr
    deserialize_strict(out)
    provn = cli("export", provrun["run_id"][-5:], "--store", store, "--format", "provn", cwd=work)
    assert provn.returncode == 0 and "activity(p4m:run_" in provn.stdout
