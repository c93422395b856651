"""`jupyter-prov4ml export RUN --format rocrate -o DIR_OR_ZIP`: an RO-Crate of one run that
the `rocrate` package reads back, with every file's sha256, the run described as a
CreateAction, and metadata that parses as JSON-LD. (What the crate must never hold: see
test_crate_trust.py.)"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from conftest import extension_of
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.store.layout import Store, StoredRun

rocrate = pytest.importorskip("rocrate.rocrate")

TRAIN = """%%provrun --name crated --param lr=0.01 --no-graph --no-live --interval 0.01
from jupyter_prov4ml import log_metric
import time
batch_size = 32
for epoch in range(3):
    log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    time.sleep(0.02)
"""


@pytest.fixture
def notebook_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook the kernel says it serves (as jupyter_server tells a kernel)."""
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4}))
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    return notebook


@pytest.fixture
def trained(notebook_file: Path, loaded: Any) -> StoredRun:
    """A %%provrun with parameters, metrics and hardware samples, recorded by a real shell."""
    assert loaded.run_cell(TRAIN, store_history=True).success
    extension = extension_of(loaded)
    assert extension.writer.flush(timeout_s=30)
    (stored,) = extension.store.runs()
    assert {f.role for f in stored.run.data_files} == {"metrics", "hardware_samples"}
    assert stored.run.cell.notebook_path == str(notebook_file)
    return stored


def export(capsys: Any, run_id: str, output: Path, *extra: str) -> None:
    capsys.readouterr()
    assert main(["export", run_id, "--format", "rocrate", "-o", str(output), *extra]) == 0
    assert capsys.readouterr().err == ""


def ident(entity: Any) -> str:
    """An entity's @id (a reference `rocrate` could not resolve comes back as the id)."""
    return str(getattr(entity, "id", entity))


def files_by_id(crate: Any) -> dict[str, Any]:
    return {entity.id: entity for entity in crate.data_entities}


def recorded_cells_name(run_id: str) -> str:
    return f"recorded-cells-{run_id}.ipynb"


def test_crate_folder_reads_back_with_checksums(
    trained: StoredRun, notebook_file: Path, tmp_path: Path, capsys: Any
) -> None:
    """The crate reads back with `ROCrate(path)`; it holds the PROV-JSON, the metrics and
    hardware sample files, the cell's code and the cells as recorded (never the notebook
    file itself), each with the sha256 of its bytes, equal to what the store recorded where
    it recorded one."""
    run = trained.run
    out = tmp_path / "crate"
    export(capsys, run.run_id, out)
    crate = rocrate.ROCrate(out)
    files = files_by_id(crate)
    recorded = {Path(f.relpath).name: f.sha256 for f in run.data_files}
    assert set(files) == {
        f"{run.run_id}.prov.json",
        *recorded,
        f"cell-{run.cell.sha256[:12]}.py",
        recorded_cells_name(run.run_id),
    }
    for name, entity in files.items():
        assert entity["sha256"] == file_sha256(out / name), name
        assert entity["contentSize"] == str((out / name).stat().st_size)
    for name, sha256 in recorded.items():
        assert files[name]["sha256"] == sha256
    assert trained.prov_path is not None
    assert files[f"{run.run_id}.prov.json"]["sha256"] == file_sha256(trained.prov_path)
    assert (out / f"cell-{run.cell.sha256[:12]}.py").read_text() == run.cell.source
    cells = files[recorded_cells_name(run.run_id)]
    assert "as recorded" in cells["name"] and "Not the notebook file" in cells["description"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProvDocument.deserialize(content=(out / f"{run.run_id}.prov.json").read_text())


def test_crate_describes_the_run_as_a_create_action(
    trained: StoredRun, tmp_path: Path, capsys: Any
) -> None:
    """The root dataset names the run and conforms to the Process Run Crate profile; it
    mentions a CreateAction with the run's times and status, jupyter_prov4ml as instrument,
    code and parameters as object, and the run's files as result."""
    run = trained.run
    out = tmp_path / "crate"
    export(capsys, run.run_id, out)
    crate = rocrate.ROCrate(out)
    root = crate.root_dataset
    assert root["name"] == "jupyter_prov4ml run crated"
    assert ident(root["conformsTo"]) == "https://w3id.org/ro/wfrun/process/0.5"
    (action,) = root["mentions"]
    assert action.type == "CreateAction"
    assert action["instrument"]["name"] == "jupyter_prov4ml"
    assert action["instrument"].type == "SoftwareApplication"
    assert ident(action["actionStatus"]) == "http://schema.org/CompletedActionStatus"
    assert action["startTime"].startswith("20") and action["startTime"] < action["endTime"]
    assert {entity.id for entity in action["result"]} == {
        f"{run.run_id}.prov.json",
        *(Path(f.relpath).name for f in run.data_files),
    }
    params = {e["name"]: e["value"] for e in action["object"] if e.type == "PropertyValue"}
    assert params == {"lr": 0.01, "batch_size": 32}
    assert trained.session is not None
    assert action["agent"]["name"] == trained.session.user


# rdflib's own JSON-LD parser uses an rdflib API that rdflib deprecates: not ours to fix.
@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
def test_metadata_is_json_ld(trained: StoredRun, tmp_path: Path, capsys: Any) -> None:
    """`ro-crate-metadata.json` parses as JSON-LD (with the RO-Crate context the `rocrate`
    package ships, so no network): the action, its instrument and results are triples."""
    rdflib = pytest.importorskip("rdflib")
    out = tmp_path / "crate"
    export(capsys, trained.run.run_id, out)
    metadata = json.loads((out / "ro-crate-metadata.json").read_text())
    shipped = json.loads(
        (resources.files("rocrate") / "data" / "ro-crate.jsonld").read_text(encoding="utf-8")
    )
    if metadata["@context"] != shipped["@id"]:
        pytest.skip(f"rocrate ships {shipped['@id']}, the crate uses {metadata['@context']}")
    metadata["@context"] = shipped["@context"]
    graph = rdflib.Graph().parse(data=json.dumps(metadata), format="json-ld", base="arcp://x/")
    schema = rdflib.Namespace("http://schema.org/")
    (action,) = graph.subjects(rdflib.RDF.type, schema.CreateAction)
    assert len(list(graph.objects(action, schema.result))) == 3
    (instrument,) = graph.objects(action, schema.instrument)
    assert str(graph.value(instrument, schema.name)) == "jupyter_prov4ml"
    hashes = {str(o) for o in graph.objects(None, schema.sha256)}
    assert {f.sha256 for f in trained.run.data_files} <= hashes


def test_zip_crate_reads_back(trained: StoredRun, tmp_path: Path, capsys: Any) -> None:
    """With `-o NAME.zip` the crate is one zip file that `ROCrate` reads, with the same files
    and checksums."""
    out = tmp_path / "exports" / "run.zip"
    export(capsys, trained.run.run_id[-5:], out)
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert "ro-crate-metadata.json" in names
        for data_file in trained.run.data_files:
            name = Path(data_file.relpath).name
            assert name in names
            assert hashlib.sha256(archive.read(name)).hexdigest() == data_file.sha256
    crate = rocrate.ROCrate(out)
    assert {Path(f.relpath).name for f in trained.run.data_files} <= set(files_by_id(crate))


def test_plain_failed_cell_crate(loaded: Any, tmp_path: Path, capsys: Any) -> None:
    """A plain cell (no own PROV file, no data files, no known notebook) still exports: its
    PROV-JSON is built from its record; a failure is a FailedActionStatus with the error."""
    loaded.run_cell("1/0", store_history=True)
    extension = extension_of(loaded)
    assert extension.writer.flush(timeout_s=30)
    (stored,) = extension.store.runs()
    out = tmp_path / "plain"
    export(capsys, stored.run.run_id, out)
    crate = rocrate.ROCrate(out)
    assert set(files_by_id(crate)) == {
        f"{stored.run.run_id}.prov.json",
        f"cell-{stored.run.cell.sha256[:12]}.py",
        recorded_cells_name(stored.run.run_id),
    }
    (action,) = crate.root_dataset["mentions"]
    assert ident(action["actionStatus"]) == "http://schema.org/FailedActionStatus"
    assert action["error"] == "ZeroDivisionError"
    document = ProvDocument.deserialize(
        content=(out / f"{stored.run.run_id}.prov.json").read_text()
    )
    ids = {str(r.identifier) for r in document.get_records() if r.is_element()}
    assert f"p4m:run_{stored.run.run_id}" in ids


def test_notebook_option_and_output_errors(trained: StoredRun, tmp_path: Path, capsys: Any) -> None:
    """`--notebook` picks the notebook to include; no `-o`, a folder holding other files, or
    a missing notebook are one-line errors with exit status 2."""
    run_id = trained.run.run_id
    executed = tmp_path / "train.executed.ipynb"
    executed.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    out = tmp_path / "with-executed"
    export(capsys, run_id, out, "--notebook", str(executed))
    assert "train.executed.ipynb" in files_by_id(rocrate.ROCrate(out))
    export(capsys, run_id, out, "--notebook", str(executed))  # the same folder again: fine

    def fails(*argv: str) -> str:
        capsys.readouterr()
        assert main(["export", run_id, "-f", "rocrate", *argv]) == 2
        out_err = capsys.readouterr()
        assert out_err.out == "" and len(out_err.err.splitlines()) == 1
        return out_err.err

    assert "needs -o" in fails()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "unrelated.txt").write_text("x")
    assert "holds other files" in fails("-o", str(busy))
    assert "no such notebook" in fails("-o", str(tmp_path / "n"), "--notebook", "nope.ipynb")


def test_changed_data_file_is_reported(trained: StoredRun, tmp_path: Path, capsys: Any) -> None:
    """A data file changed since it was recorded: the crate carries the file's real sha256 and
    the CLI warns on stderr that it differs from the recorded one."""
    import pyarrow.parquet as pq

    metrics = next(f for f in trained.run.data_files if f.role == "metrics")
    path = Store(Path(str(trained.prov_path)).parents[3]).root / metrics.relpath
    pq.write_table(pq.read_table(path).slice(0, 1), path)  # still a metrics file, another one
    capsys.readouterr()
    out = tmp_path / "crate"
    assert main(["export", trained.run.run_id, "-f", "rocrate", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "changed since it was recorded" in err and Path(metrics.relpath).name in err
    entity = files_by_id(rocrate.ROCrate(out))[Path(metrics.relpath).name]
    assert entity["sha256"] == file_sha256(path) != metrics.sha256
