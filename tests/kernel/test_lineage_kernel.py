"""Lineage through a real kernel, executed in a deliberately odd order with cell ids sent as
JupyterLab sends them: wasInformedBy, wasDerivedFrom, `%prov stale` and `%prov graph`."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbformat.v4 import new_code_cell, new_notebook

from conftest import cli, closed_runs, deserialize_strict
from jupyter_prov4ml.settings import STORE_ENV

pytestmark = pytest.mark.kernel


class Kernel:
    """A real IPython kernel driven like a front end: each request carries a cell id."""

    def __init__(self, workdir: Path, notebook: Path, store: Path) -> None:
        import os

        env = {**os.environ, STORE_ENV: str(store), "JPY_SESSION_NAME": str(notebook)}
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", cwd=str(workdir), env=env, startup_timeout=120
        )

    def run(self, code: str, cell_id: str | None = None) -> dict[str, Any]:
        """Execute; return the reply content and the text of what the cell displayed."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.client.session.msg(
            "execute_request", content, metadata={"cellId": cell_id} if cell_id else {}
        )
        self.client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        texts = []
        while True:
            try:
                output = self.client.get_iopub_msg(timeout=120)
            except queue.Empty:
                raise AssertionError(f"no output from the kernel for {code!r}") from None
            if output["parent_header"].get("msg_id") != msg_id:
                continue
            kind, body = output["msg_type"], output["content"]
            if kind in ("execute_result", "display_data"):
                texts.append(body["data"].get("text/plain", ""))
                texts.append(body["data"].get("text/html", ""))
            elif kind == "stream":
                texts.append(body["text"])
            elif kind == "error":
                texts.append(f"{body['ename']}: {body['evalue']}")
            elif kind == "status" and body["execution_state"] == "idle":
                break
        reply = self.client.get_shell_msg(timeout=120)
        return {"status": reply["content"]["status"], "text": "\n".join(texts)}

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


CELLS = {"c1": "a = 1", "c2": "b = a + 1", "c3": "c = b * 10\nc"}


@pytest.fixture(scope="module")
def odd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run c1, c2, c3; edit c1 (a = 5) and re-run it; run c3 again; then ask for stale cells
    and the session graph. The notebook file on disk has the edited c1, as after a save."""
    work = tmp_path_factory.mktemp("lineage")
    notebook = work / "odd.ipynb"
    cells = [new_code_cell(source, id=cell_id) for cell_id, source in CELLS.items()]
    cells[0].source = "a = 5"
    nbformat.write(new_notebook(cells=cells), notebook)
    store = work / "store"
    kernel = Kernel(work, notebook, store)
    try:
        assert kernel.run("%load_ext jupyter_prov4ml")["status"] == "ok"
        for cell_id in ("c1", "c2", "c3"):
            assert kernel.run(CELLS[cell_id], cell_id)["status"] == "ok"
        assert kernel.run("a = 5", "c1")["status"] == "ok"
        third = kernel.run(CELLS["c3"], "c3")
        stale = kernel.run("%prov stale")
        graph = kernel.run("%prov graph")
        kernel.run("%prov flush")
    finally:
        kernel.close()
    yield {"store": store, "third": third, "stale": stale["text"], "graph": graph["text"]}


def journal_runs(store: Path) -> list[dict[str, Any]]:
    return closed_runs(store)


def test_informed_by_and_derived_from(odd_session: dict[str, Any]) -> None:
    """c2 was informed by c1's first run (a); both runs of c3 by c2 (b); the second version of
    c1 is derived from the first."""
    runs = journal_runs(odd_session["store"])
    runs = [r for r in runs if r["cell"]["cell_id"]]  # the %prov cells had no id
    assert [r["cell"]["cell_id"] for r in runs] == ["c1", "c2", "c3", "c1", "c3"]
    c1_first, c2, c3_first, c1_second, c3_second = runs
    assert c2["informed_by"] == [[c1_first["run_id"], ["a"]]]
    assert c3_first["informed_by"] == [[c2["run_id"], ["b"]]]
    assert c3_second["informed_by"] == [[c2["run_id"], ["b"]]]
    assert c1_second["derived_from_sha256"] == c1_first["cell"]["sha256"]
    assert [v["name"] for v in c2["variables"]] == ["b"]
    assert c2["variables"][0]["type_name"] == "int"
    assert "10" in odd_session["third"]["text"] or odd_session["third"]["status"] == "ok"


def test_prov_documents_carry_the_lineage(odd_session: dict[str, Any]) -> None:
    """The cells' PROV-JSON has the wasInformedBy and wasDerivedFrom edges, variables as
    entities generated by the executions that bound them, and reads back with prov."""
    store = odd_session["store"]
    documents = []
    for session in store.glob("sessions/*"):
        path = store.parent / f"{session.name}.prov.json"
        done = cli(
            "export", session.name, "--session", "--store", str(store), "-o", str(path), cwd=store
        )
        assert done.returncode == 0, done.stderr
        documents.append(path)
    assert documents
    informed, derived, variables = [], [], []
    for path in documents:
        deserialize_strict(path)
        document = json.loads(path.read_text())
        informed += list(document.get("wasInformedBy", {}).values())
        derived += list(document.get("wasDerivedFrom", {}).values())
        variables += [k for k in document.get("entity", {}) if k.startswith("p4m:var_")]
    runs = [r for r in journal_runs(odd_session["store"]) if r["cell"]["cell_id"]]
    expected = {(runs[1]["run_id"], runs[0]["run_id"]), (runs[2]["run_id"], runs[1]["run_id"])}
    found = {
        (r["prov:informed"].removeprefix("p4m:run_"), r["prov:informant"].removeprefix("p4m:run_"))
        for r in informed
    }
    assert expected <= found
    (derivation,) = derived
    assert derivation["prov:usedEntity"] == f"p4m:cell_{runs[0]['cell']['sha256'][:16]}"
    assert derivation["prov:generatedEntity"] == f"p4m:cell_{runs[3]['cell']['sha256'][:16]}"
    assert {f"p4m:var_{runs[0]['run_id']}_a", f"p4m:var_{runs[1]['run_id']}_b"} <= set(variables)


def test_prov_stale_names_the_right_cell(odd_session: dict[str, Any]) -> None:
    """`%prov stale` names c2 (its input `a` was rebound by the edited c1) and nothing else."""
    text = odd_session["stale"]
    assert "cell c2" in text and "`a` was rebound" in text
    assert "cell c1" not in text and "cell c3" not in text


def test_prov_graph_shows_the_session(odd_session: dict[str, Any]) -> None:
    """`%prov graph` draws one node per cell with the variables as edge labels."""
    text = odd_session["graph"]
    assert "b = a + 1" in text and "c = b * 10" in text
    assert ">a<" in text or "label=a" in text


def test_cli_graph_and_stale_rebuild_the_lineage(odd_session: dict[str, Any]) -> None:
    """From a shell, without the kernel: `stale` names c2 and `graph` draws the session."""

    def run(command: str) -> str:
        done = cli(command, "--store", str(odd_session["store"]), cwd=odd_session["store"])
        assert done.returncode == 0, done.stderr
        return done.stdout

    stale = run("stale")
    assert "cell c2" in stale and "`a` was rebound" in stale and "cell c3" not in stale
    dot = run("graph")
    assert dot.startswith("digraph lineage") and "b = a + 1" in dot and "label=a" in dot
