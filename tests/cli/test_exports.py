"""Every PROV export format reads back: PROV-JSON and PROV-XML with `prov`'s deserializers,
PROV-O Turtle with `prov` and rdflib, PROV-N statement for statement against the document —
for a %%provrun and a plain cell recorded by a real shell."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from conftest import extension_of, read_prov_json_strict
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.store.layout import StoredRun

PROVRUN = """%%provrun --name exported --param lr=0.5 --no-graph --no-live
from jupyter_prov4ml import log_metric, track
for epoch in track(range(2)):
    log_metric("loss", 1.0 / (epoch + 1))
"""


@pytest.fixture(params=["provrun", "cell"])
def stored(request: Any, loaded: Any) -> StoredRun:
    """A %%provrun with steps and metrics, or a plain cell (whose document is built from its
    record), recorded by a real shell."""
    source = PROVRUN if request.param == "provrun" else "x = [1, 2, 3]"
    assert loaded.run_cell(source, store_history=True).success
    extension = extension_of(loaded)
    assert extension.writer.flush(timeout_s=30)
    (run,) = extension.store.runs()
    return run


def exported(capsys: Any, tmp_path: Path, run_id: str, fmt: str) -> str:
    """The export written with `-o`, which must equal what stdout gets."""
    target = tmp_path / f"export.{fmt}"
    capsys.readouterr()
    assert main(["export", run_id, "--format", fmt, "-o", str(target)]) == 0
    assert main(["export", run_id, "--format", fmt]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    text = target.read_text(encoding="utf-8")
    assert printed.out.rstrip("\n") == text.rstrip("\n")
    return text


def strict(content: str, **options: Any) -> ProvDocument:
    if options.get("format") == "json":
        # The PROV-JSON export must also pass the W3C PROV-JSON schema.
        document: ProvDocument = read_prov_json_strict(content, "`export --format json` output")
        return document
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ProvDocument.deserialize(content=content, **options)


@pytest.fixture
def reference(stored: StoredRun, capsys: Any, tmp_path: Path) -> ProvDocument:
    """The run's PROV-JSON export, read back strictly: what the other formats must equal."""
    document = strict(exported(capsys, tmp_path, stored.run.run_id, "json"), format="json")
    ids = {str(r.identifier) for r in document.get_records() if r.is_element()}
    assert f"p4m:run_{stored.run.run_id}" in ids
    return document


def test_prov_xml_reads_back_equal(
    stored: StoredRun, reference: ProvDocument, capsys: Any, tmp_path: Path
) -> None:
    """PROV-XML read with `prov`'s XML deserializer is the same document as the PROV-JSON."""
    text = exported(capsys, tmp_path, stored.run.run_id, "xml")
    assert strict(text, format="xml") == reference


def test_prov_o_turtle_reads_back_equal(
    stored: StoredRun, reference: ProvDocument, capsys: Any, tmp_path: Path
) -> None:
    """PROV-O Turtle parses with rdflib, and `prov`'s RDF deserializer reads it back as the
    same document as the PROV-JSON."""
    rdflib = pytest.importorskip("rdflib")
    text = exported(capsys, tmp_path, stored.run.run_id, "rdf")
    graph = rdflib.Graph().parse(data=text, format="turtle")
    activity = rdflib.URIRef(f"https://w3id.org/jupyter-prov4ml/ns#run_{stored.run.run_id}")
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    assert (activity, rdflib.RDF.type, prov.Activity) in graph
    assert ProvDocument.deserialize(content=text, format="rdf", rdf_format="turtle") == reference


def test_prov_n_has_every_statement(
    stored: StoredRun, reference: ProvDocument, capsys: Any, tmp_path: Path
) -> None:
    """`prov` has no PROV-N reader, so PROV-N is checked statement for statement: its lines
    are exactly those of the PROV-JSON document read back (order aside), and each element's
    identifier appears."""
    text = exported(capsys, tmp_path, stored.run.run_id, "provn")
    assert sorted(text.strip().splitlines()) == sorted(reference.get_provn().splitlines())
    for record in reference.get_records():
        if record.is_element():
            assert f"({record.identifier}" in text
