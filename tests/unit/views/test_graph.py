"""Provenance graphs: inline SVG with Graphviz, and — for real, with `dot` off the PATH — one
install hint plus the DOT text, never a traceback."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from conftest import displayed, have_dot
from jupyter_prov4ml.provmodel import run_document
from jupyter_prov4ml.records import CellRef, CellRun, DataFile, Param, SessionInfo
from jupyter_prov4ml.views.prov_graph import INSTALL_HINT, ProvGraph, dot_source

requires_dot = pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")

SESSION = "20260101T000000-abcdef"
RUN_ID = f"{SESSION}-00001"


def sample_document() -> ProvDocument:
    """A run with parameters, a data file and session agents: every PROV node kind."""
    run = CellRun(
        run_id=RUN_ID,
        session_id=SESSION,
        kind="provrun",
        cell=CellRef("ab" * 32, "%%provrun\nlr = 0.1\n", "cell:1", 3),
        started_at_unix_s=1_700_000_000.0,
        ended_at_unix_s=1_700_000_002.0,
        wall_time_s=2.0,
        cpu_time_s=1.5,
        status="ok",
        name='weird "name" <b>',
        params=(Param("lr", 0.1, "literal"), Param("opt:name", "sgd", "magic")),
        data_files=(DataFile("hardware_samples", f"runs/{RUN_ID}.parquet", "cd" * 32, 10, "x/y"),),
    )
    info = SessionInfo(
        session_id=SESSION,
        user="ada:lovelace",
        started_at_unix_s=1_700_000_000.0,
        software=(("jupyter_prov4ml", "0.1.0"),),
        hostname="node:1",
        platform="Linux",
        cpu_model="CPU",
        cpu_count_logical=4,
        memory_total_bytes=1 << 30,
    )
    return run_document(run, info)


def element_ids(doc: ProvDocument) -> list[str]:
    return [str(record.identifier) for record in doc.get_records() if record.is_element()]


def relation_count(doc: ProvDocument) -> int:
    return sum(1 for record in doc.get_records() if record.is_relation())


@pytest.fixture
def no_dot_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH is an empty folder: graphviz cannot find `dot`, exactly as on a bare machine."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("dot") is None


@pytest.mark.needs_dot
@requires_dot
def test_graph_with_dot_is_inline_svg(capfd: pytest.CaptureFixture[str]) -> None:
    """With `dot`, the HTML bundle holds an inline `<svg>` (not an <img>), no XML prologue."""
    graph = ProvGraph.of(sample_document(), title="a title")
    assert graph.svg is not None and graph.note is None
    bundle = graph._repr_mimebundle_()
    assert bundle["text/html"].startswith('<div class="jp-prov4ml-graph"><svg')
    assert "<?xml" not in bundle["text/html"] and "<!DOCTYPE" not in bundle["text/html"]
    assert "image/svg+xml" not in bundle
    assert bundle["text/plain"].startswith("<ProvGraph:")
    assert "Warning" not in capfd.readouterr().err


@pytest.mark.needs_dot
@requires_dot
def test_prefixed_ids_are_nodes_not_ports(capfd: pytest.CaptureFixture[str]) -> None:
    """Ids like `p4m:run_…` (and labels with colons) stay whole: no graphviz port warnings,
    one SVG node per PROV element and one edge per relation."""
    doc = sample_document()
    graph = ProvGraph.of(doc)
    assert graph.svg is not None
    err = capfd.readouterr().err
    assert "port" not in err.lower() and "warning" not in err.lower()
    node_ids = [html.unescape(i) for i in re.findall(r'<g id="([^"]*)" class="node"', graph.svg)]
    assert sorted(node_ids) == sorted(element_ids(doc))
    assert len(node_ids) == len(set(node_ids)) == 8
    assert graph.svg.count('class="edge"') == relation_count(doc)
    # The DOT names nodes with plain ids; the PROV id is only an attribute.
    assert not re.search(r"^\s*\"?p4m:", graph.dot, re.MULTILINE)


def test_dot_source_has_every_element_once() -> None:
    """The DOT text has one node statement per PROV element, styled by PROV kind."""
    doc = sample_document()
    source = dot_source(doc, title="t")
    assert source.startswith("digraph provenance {")
    ids = re.findall(r'\bid="([^"]*)"', source)
    assert sorted(ids) == sorted(element_ids(doc))
    assert source.count("shape=box") == 1  # the activity
    assert source.count("shape=house") == 2  # user and software agents
    assert source.count("->") == relation_count(doc)


def test_cleaned_ids_are_the_same_in_every_process() -> None:
    """An id that needed cleaning (a user `ada:lovelace`) is the same in every process."""
    code = "from jupyter_prov4ml.provmodel import safe_local; print(safe_local('ada:lovelace'))"
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(ids) == 1, ids


def test_without_dot_text_fallback(no_dot_on_path: None) -> None:
    """No `dot`: no SVG, no exception; text/plain is exactly one hint line, then the DOT."""
    doc = sample_document()
    graph = ProvGraph.of(doc, title="no dot here")
    assert graph.svg is None
    assert graph.note == INSTALL_HINT
    bundle = graph._repr_mimebundle_()
    hint, _, rest = bundle["text/plain"].partition("\n")
    assert "\n" not in INSTALL_HINT
    assert hint == INSTALL_HINT
    assert "install" in hint and "graphviz" in hint and "dot" in hint
    assert rest == graph.dot == dot_source(doc, title="no dot here")
    assert rest.startswith("digraph provenance {") and rest.rstrip().endswith("}")
    assert repr(graph) == bundle["text/plain"]
    page = bundle["text/html"]
    assert "<svg" not in page
    assert html.escape(INSTALL_HINT) in page
    pre = re.search(r"<pre>(.*)</pre>", page, re.DOTALL)
    assert pre is not None and html.unescape(pre.group(1)) == graph.dot


def test_failing_dot_falls_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `dot` that exists but fails gives the DOT text and a one-line note, no exception."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\necho 'dot: broken install' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    graph = ProvGraph.of(sample_document())
    assert graph.svg is None
    assert graph.note is not None and "\n" not in graph.note and "dot" in graph.note
    assert graph._repr_mimebundle_()["text/plain"] == f"{graph.note}\n{graph.dot}"


def test_provrun_without_dot_shows_hint_and_dot(
    loaded: Any, no_dot_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `%%provrun` with no `dot` on PATH: the cell succeeds, the displayed graph is
    the hint plus `digraph …`, and nothing prints a traceback."""
    result = loaded.run_cell(
        "%%provrun --name nodot --no-live\nx = 41 + 1\n", store_history=True, cell_id="c1"
    )
    assert result.success and loaded.user_ns["x"] == 42
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "could not draw" not in out.err
    graphs = [b for b in displayed(loaded) if "digraph" in b.get("text/plain", "")]
    assert len(graphs) == 1
    text = graphs[0]["text/plain"]
    assert text.splitlines()[0] == INSTALL_HINT
    assert text.splitlines()[1].startswith("digraph provenance")
    assert "nodot" in text and "p4m:run_" in text
    assert "<svg" not in graphs[0]["text/html"]


def test_prov_show_without_dot(
    loaded: Any, no_dot_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`%prov show RUN` without `dot` also shows the hint and DOT text, no traceback."""
    loaded.run_cell("%%provrun --name shown --no-graph --no-live\npass\n", store_history=True)
    # A plain cell makes flush() write the session document, which flushes the journal first.
    loaded.run_cell("pass", store_history=True)
    assert loaded._jupyter_prov4ml.writer.flush(timeout_s=30)
    run_id = loaded.run_line_magic("prov", "list --kind provrun").rows[-1]["run_id"]
    before = len(displayed(loaded))
    loaded.run_line_magic("prov", f"show {run_id}")
    shown = displayed(loaded)[before:]
    assert any(b.get("text/plain", "").startswith(INSTALL_HINT + "\ndigraph") for b in shown)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_many_variables_collapse_into_one_node() -> None:
    """A run that bound many names shows one node listing them, not one node per name; a run
    with few keeps one node each."""
    from jupyter_prov4ml.provmodel import graph_elements, run_document
    from jupyter_prov4ml.records import CellRef, CellRun, VariableSummary

    def run_with(count: int) -> CellRun:
        names = tuple(VariableSummary(f"v{i}", "int", str(i)) for i in range(count))
        return CellRun(
            "s-00001", "s", "cell", CellRef("a" * 64, "x"), 0, 1, 1, 1, "ok", variables=names
        )

    nodes, edges = graph_elements(run_document(run_with(10), None))
    (group,) = [n for n in nodes if "variables" in n.label]
    assert group.label.startswith("10 variables") and "v9" in group.tooltip
    assert not [n for n in nodes if n.label == "v3"]
    assert [e.relation for e in edges if e.source == group.node_id] == ["wasGeneratedBy"]
    nodes, _ = graph_elements(run_document(run_with(3), None))
    assert {"v0", "v1", "v2"} <= {n.label for n in nodes}
