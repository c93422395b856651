"""`jupyter-prov4ml list | show | export` on a store recorded by a real IPython shell, in
process and through the installed console script."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from conftest import closed_runs, extension_of, have_dot, read_prov_json_strict
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.views.prov_graph import INSTALL_HINT

PLAIN = "a = 1"
FAILING = "1/0"
PROVRUN = "%%provrun --name baseline --param lr=0.01 --no-graph --no-live\nbatch_size = 64\n"
AFTER = "b = a + 1"

ROW_KEYS = {
    "run_id",
    "kind",
    "name",
    "cell_sha256",
    "cell_id",
    "execution_count",
    "status",
    "started_at",
    "duration_s",
    "prov_path",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Recorded:
    """A store with four runs, recorded by the extension, and what we expect of each."""

    store: Path
    cwd: Path
    cells: list[dict[str, Any]]  # source, cell_id, execution_count, kind, status, name
    journal: list[dict[str, Any]]  # the journal's close records, in order

    def run_id(self, cell_id: str) -> str:
        (run,) = [r for r in self.journal if r["cell"]["cell_id"] == cell_id]
        return str(run["run_id"])


@pytest.fixture
def recorded(loaded: Any, store_dir: Path, tmp_path: Path, capsys: Any) -> Recorded:
    cells = []
    for source, cell_id, kind, status, name in [
        (PLAIN, "c-plain", "cell", "ok", None),
        (FAILING, "c-fail", "cell", "failed", None),
        (PROVRUN, "c-train", "provrun", "ok", "baseline"),
        (AFTER, "c-after", "cell", "ok", None),
    ]:
        result = loaded.run_cell(source, store_history=True, cell_id=cell_id)
        cells.append(
            {
                "source": source,
                "cell_id": cell_id,
                "execution_count": result.execution_count,
                "kind": kind,
                "status": status,
                "name": name,
            }
        )
    assert extension_of(loaded).writer.flush(timeout_s=30)
    capsys.readouterr()
    return Recorded(store_dir, tmp_path, cells, closed_runs(store_dir))


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def console_script() -> list[str] | None:
    """The installed `jupyter-prov4ml` of this interpreter's environment (.venv in CI)."""
    beside = Path(sys.executable).parent / "jupyter-prov4ml"
    found = str(beside) if beside.is_file() else shutil.which("jupyter-prov4ml")
    return [found] if found else None


INVOCATIONS = {
    "console-script": console_script(),
    "module": [sys.executable, "-m", "jupyter_prov4ml.cli.main"],
}


@pytest.fixture(params=sorted(INVOCATIONS))
def command(request: Any) -> list[str]:
    """The CLI as a separate process: the real console script, and `python -m`."""
    argv = INVOCATIONS[request.param]
    if argv is None:
        pytest.skip("the jupyter-prov4ml console script is not installed")
    return argv


def strict_prov_json(text: str) -> ProvDocument:
    """CLI output: valid against the W3C PROV-JSON schema and read back by `prov` warning-free."""
    result: ProvDocument = read_prov_json_strict(text, source="jupyter-prov4ml export output")
    return result


# -- list -----------------------------------------------------------------------------------


def test_list_json_rows(recorded: Recorded, capsys: Any) -> None:
    """`list --json` has one object per run, oldest first, with the documented keys and the
    values the shell actually ran."""
    code, out, err = cli(capsys, "list", "--json")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert len(rows) == 4
    for row, cell, journal in zip(rows, recorded.cells, recorded.journal, strict=True):
        assert set(row) >= ROW_KEYS
        assert row["run_id"] == journal["run_id"]
        assert row["kind"] == cell["kind"]
        assert row["name"] == cell["name"]
        assert row["cell_sha256"] == sha(cell["source"])
        assert row["cell_id"] == cell["cell_id"]
        assert row["execution_count"] == cell["execution_count"]
        assert row["status"] == cell["status"]
        started = dt.datetime.fromisoformat(row["started_at"])
        assert started.tzinfo is not None
        assert started.timestamp() == pytest.approx(journal["started_at_unix_s"], abs=1e-5)
        assert row["duration_s"] == pytest.approx(journal["wall_time_s"], abs=1e-6)
        assert row["duration_s"] >= 0
        if row["kind"] == "provrun":
            prov_path = Path(row["prov_path"])
            assert prov_path.is_absolute() and prov_path.is_file()
            assert prov_path.is_relative_to(recorded.store)
        else:  # a plain cell's document is made from its journal line when exported
            assert row["prov_path"] is None
    assert rows[1]["error_type"] == "ZeroDivisionError"
    assert rows[2]["params"] == {"lr": 0.01, "batch_size": 64}
    assert Path(rows[2]["prov_path"]).name == f"{rows[2]['run_id']}.prov.json"
    assert [r["execution_count"] for r in rows] == sorted(r["execution_count"] for r in rows)


def test_list_table(recorded: Recorded, capsys: Any) -> None:
    """`list` prints an aligned table: a header, then one line per run with id, kind, status."""
    code, out, _ = cli(capsys, "list")
    assert code == 0
    header, *lines = out.rstrip("\n").splitlines()
    assert header.split() == [
        "run_id",
        "kind",
        "name",
        "execution_count",
        "status",
        "started_at",
        "duration_s",
    ]
    assert len(lines) == 4
    for line, run, cell in zip(lines, recorded.journal, recorded.cells, strict=True):
        assert line.startswith(run["run_id"])
        assert f" {cell['kind']} " in line and f" {cell['status']} " in line
    assert "baseline" in lines[2]
    assert len({line.index(" ok ") for line in (lines[0], lines[2], lines[3])}) == 1


def test_list_kind_and_last(recorded: Recorded, capsys: Any) -> None:
    """`--kind` keeps one kind; `--last N` keeps the newest N after filtering."""
    ids = [r["run_id"] for r in recorded.journal]

    def listed(*args: str) -> list[str]:
        code, out, _ = cli(capsys, "list", "--json", *args)
        assert code == 0
        return [row["run_id"] for row in json.loads(out)]

    assert listed("--kind", "provrun") == [ids[2]]
    assert listed("--kind", "cell") == [ids[0], ids[1], ids[3]]
    assert listed("--last", "2") == ids[2:]
    assert listed("--last", "10") == ids
    assert listed("--last", "0") == []
    assert listed("--kind", "cell", "--last", "1") == [ids[3]]


def test_list_bad_kind_is_a_usage_error(recorded: Recorded, capsys: Any) -> None:
    """An unknown `--kind` is rejected by the parser with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "--kind", "bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_list_store_option_and_empty_store(recorded: Recorded, tmp_path: Path, capsys: Any) -> None:
    """`--store` (relative to the working dir) overrides the variable; an empty store lists
    nothing without failing."""
    code, out, _ = cli(capsys, "list", "--json", "--store", "store")
    assert code == 0 and len(json.loads(out)) == 4
    code, out, _ = cli(capsys, "list", "--store", str(tmp_path / "empty"))
    assert (code, out.strip()) == (0, "no runs recorded yet")
    code, out, _ = cli(capsys, "list", "--json", "--store", str(tmp_path / "empty"))
    assert (code, json.loads(out)) == (0, [])


# -- show -----------------------------------------------------------------------------------


def test_show_provrun(recorded: Recorded, capsys: Any) -> None:
    """`show` prints `key: value` lines for a run, with its data files, found by a suffix."""
    run_id = recorded.run_id("c-train")
    code, out, err = cli(capsys, "show", run_id[-5:])
    assert (code, err) == (0, "")
    fields = dict(line.strip().split(": ", 1) for line in out.splitlines())
    assert fields["run_id"] == run_id
    assert fields["kind"] == "provrun"
    assert fields["name"] == "baseline"
    assert fields["status"] == "ok"
    assert fields["cell_sha256"] == sha(PROVRUN)
    assert fields["cell_id"] == "c-train"
    assert "'lr': 0.01" in fields["params"] and "'batch_size': 64" in fields["params"]
    data_files = [line for line in out.splitlines() if line.strip().startswith("data file:")]
    assert data_files and all(".parquet (" in line for line in data_files)
    for line in data_files:
        relpath = line.split(": ", 1)[1].rsplit(" (", 1)[0]
        assert (recorded.store / relpath).is_file()


def test_show_failed_cell(recorded: Recorded, capsys: Any) -> None:
    """`show` of a failed plain cell names the failure."""
    code, out, _ = cli(capsys, "show", recorded.run_id("c-fail"))
    assert code == 0
    assert "status: failed" in out and "error_type: ZeroDivisionError" in out


# -- export ---------------------------------------------------------------------------------


def test_export_json_provrun(recorded: Recorded, capsys: Any) -> None:
    """`export RUN` (PROV-JSON) reads back with `prov`, no warnings, and equals the stored file."""
    run_id = recorded.run_id("c-train")
    code, out, err = cli(capsys, "export", run_id, "--format", "json")
    assert (code, err) == (0, "")
    doc = strict_prov_json(out)
    (stored,) = recorded.store.glob(f"sessions/*/runs/{run_id}.prov.json")
    assert doc == strict_prov_json(stored.read_text())
    assert f"p4m:run_{run_id}" in {str(r.identifier) for r in doc.get_records() if r.is_element()}
    assert sha(PROVRUN) in out


def test_export_json_plain_cell(recorded: Recorded, capsys: Any) -> None:
    """A plain cell exports its own document, built from the journal record."""
    run_id = recorded.run_id("c-plain")
    code, out, _ = cli(capsys, "export", run_id)
    assert code == 0
    doc = strict_prov_json(out)
    activities = [r for r in doc.get_records() if r.get_type().localpart == "Activity"]
    assert [str(a.identifier) for a in activities] == [f"p4m:run_{run_id}"]
    assert sha(PLAIN) in out and sha(AFTER) not in out


def test_export_provn(recorded: Recorded, capsys: Any) -> None:
    """`--format provn` is PROV-N with the run's activity and its relations."""
    run_id = recorded.run_id("c-train")
    code, out, _ = cli(capsys, "export", run_id, "-f", "provn")
    assert code == 0
    assert out.startswith("document") and out.rstrip().endswith("endDocument")
    assert f"activity(p4m:run_{run_id}," in out
    assert "used(" in out and "wasAssociatedWith(" in out


def test_export_xml(recorded: Recorded, capsys: Any) -> None:
    """`--format xml` is PROV-XML that parses, with the run's activity."""
    run_id = recorded.run_id("c-train")
    code, out, _ = cli(capsys, "export", run_id, "-f", "xml")
    assert code == 0
    root = ET.fromstring(out)
    assert root.tag.endswith("document")
    assert run_id in out


def test_export_rdf(recorded: Recorded, capsys: Any) -> None:
    """`--format rdf` is Turtle that rdflib parses, mentioning the run."""
    run_id = recorded.run_id("c-train")
    code, out, _ = cli(capsys, "export", run_id, "-f", "rdf")
    assert code == 0
    assert run_id in out
    rdflib = pytest.importorskip("rdflib")
    graph = rdflib.Graph().parse(data=out, format="turtle")
    assert len(graph) > 10


def test_export_dot(recorded: Recorded, capsys: Any) -> None:
    """`--format dot` is the Graphviz source, titled with the run's name."""
    code, out, _ = cli(capsys, "export", recorded.run_id("c-train"), "-f", "dot")
    assert code == 0
    assert out.startswith("digraph provenance {") and "label=baseline" in out


@pytest.mark.needs_dot
@pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")
def test_export_svg(recorded: Recorded, capsys: Any) -> None:
    """`--format svg` is an SVG document laid out by `dot`."""
    code, out, _ = cli(capsys, "export", recorded.run_id("c-train"), "-f", "svg")
    assert code == 0
    assert "<svg" in out and out.rstrip().endswith("</svg>")
    ET.fromstring(out[out.index("<svg") :])


def test_export_svg_without_dot(
    recorded: Recorded, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--format svg` with no `dot` on PATH: exit 3 and the install hint in one line."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, out, err = cli(capsys, "export", recorded.run_id("c-train"), "-f", "svg")
    assert (code, out) == (3, "")
    assert err.splitlines() == [f"jupyter-prov4ml: {INSTALL_HINT}"]


def test_export_to_file(recorded: Recorded, capsys: Any, tmp_path: Path) -> None:
    """`-o FILE` writes the export there and nothing to stdout; content matches stdout's."""
    run_id = recorded.run_id("c-train")
    target = tmp_path / "out.provn"
    code, out, err = cli(capsys, "export", run_id, "-f", "provn", "-o", str(target))
    assert (code, out, err) == (0, "", "")
    _, printed, _ = cli(capsys, "export", run_id, "-f", "provn")
    assert target.read_text().rstrip("\n") == printed.rstrip("\n")


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["show", "export"])
def test_unknown_run_is_one_line_exit_2(recorded: Recorded, capsys: Any, subcommand: str) -> None:
    """An unknown run id: exit status 2, one line on stderr, nothing on stdout."""
    code, out, err = cli(capsys, subcommand, "no-such-run")
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"jupyter-prov4ml: no run 'no-such-run' in {recorded.store}"]


def test_ambiguous_suffix_is_one_line_exit_2(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """Two kernel sessions both have a run `…-00001`: that suffix is ambiguous, exit 2."""
    loaded.run_cell("x = 1", store_history=True)
    loaded.run_cell("%unload_ext jupyter_prov4ml")
    loaded.run_cell("%load_ext jupyter_prov4ml")
    loaded.run_cell("y = 2", store_history=True)
    assert extension_of(loaded).writer.flush(timeout_s=30)
    ids = [r["run_id"] for r in closed_runs(store_dir)]
    suffix = "-" + ids[0].rsplit("-", 1)[1]
    assert sum(i.endswith(suffix) for i in ids) == 2
    capsys.readouterr()
    code, out, err = cli(capsys, "show", suffix)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "matches 2 runs" in err
    assert cli(capsys, "show", ids[-1])[0] == 0


# -- the real executable ----------------------------------------------------------------------


def test_console_script_list_and_export(recorded: Recorded, command: list[str]) -> None:
    """The installed command lists runs as JSON and exports PROV-JSON that `prov` reads."""
    listing = subprocess.run(
        [*command, "list", "--json"], cwd=recorded.cwd, capture_output=True, text=True
    )
    assert (listing.returncode, listing.stderr) == (0, "")
    rows = json.loads(listing.stdout)
    assert [row["run_id"] for row in rows] == [r["run_id"] for r in recorded.journal]
    run_id = recorded.run_id("c-train")
    export = subprocess.run(
        [*command, "export", run_id, "--store", str(recorded.store)],
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0
    assert f"p4m:run_{run_id}" in {
        str(r.identifier) for r in strict_prov_json(export.stdout).get_records() if r.is_element()
    }


def test_console_script_unknown_run(recorded: Recorded, command: list[str]) -> None:
    """The installed command, given an unknown run: exit 2, one stderr line, no traceback."""
    done = subprocess.run(
        [*command, "show", "no-such-run"], cwd=recorded.cwd, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"jupyter-prov4ml: no run 'no-such-run' in {recorded.store}"
    ]
