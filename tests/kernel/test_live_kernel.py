"""The live dashboard and the energy ledger through a real kernel (nbclient)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import deserialize_strict

pytestmark = pytest.mark.kernel

# Busy until both 2 s of wall-clock time and 2 s of the process's CPU time have passed: the run
# lasts at least 2 s and burns CPU all along by construction, however fast the machine (a loop
# on CPU time alone can end a little before 2 s of wall time, the kernel's other threads
# counting toward the process's CPU time too).
BURN = """%%provrun --name burn --no-graph
import time
wall0, cpu0 = time.monotonic(), time.process_time()
while time.monotonic() - wall0 < 2.0 or time.process_time() - cpu0 < 2.0:
    sum(range(1000))
"""


def field(html: str, name: str) -> str:
    match = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert match, f"no {name} in the dashboard"
    return match.group(1)


@pytest.fixture(scope="module")
def burned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run a notebook whose %%provrun cell burns CPU for at least 2 s, headlessly."""
    work = tmp_path_factory.mktemp("burn")
    nb = new_notebook(
        cells=[new_code_cell("%load_ext jupyter_prov4ml"), new_code_cell(BURN)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, work / "burn.ipynb")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_prov4ml.cli.main",
            "run",
            "burn.ipynb",
            "-o",
            "out.ipynb",
            "--store",
            "store",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    executed = nbformat.read(work / "out.ipynb", as_version=4)
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (path,) = (work / "store").glob("sessions/*/runs/*.prov.json")
    return {"state": state, "prov_path": path, "executed": executed}


def dashboard_html(state: dict[str, Any]) -> str:
    """The final value of the dashboard's figures, as nbclient saved the widget state."""
    boxes = [m for m in state.values() if "jp-prov4ml-live" in m["state"].get("_dom_classes", [])]
    assert len(boxes) == 1
    first_child = boxes[0]["state"]["children"][0].removeprefix("IPY_MODEL_")
    return str(state[first_child]["state"]["value"])


def test_saved_dashboard_shows_final_figures(burned: dict[str, Any]) -> None:
    """The dashboard's final state, saved in the notebook, shows elapsed ≥ 2 s and a non-zero
    CPU energy marked `estimated` (no RAPL here)."""
    html = dashboard_html(burned["state"])
    assert float(field(html, "elapsed_s")) >= 2.0
    assert float(field(html, "energy_j")) > 0
    assert field(html, "energy_method") == "estimated"
    assert field(html, "status") == "ok"


def test_prov_document_carries_the_same_figures(burned: dict[str, Any]) -> None:
    """The PROV activity has the same duration and energy the dashboard shows, with methods,
    and CO2 flagged as an estimate; the sample series is a referenced data file."""
    deserialize_strict(burned["prov_path"])
    document = json.loads(burned["prov_path"].read_text())
    (activity,) = document["activity"].values()
    html = dashboard_html(burned["state"])

    def number(key: str) -> float:
        value = activity[f"p4m:{key}"]
        return float(value["$"] if isinstance(value, dict) else value)

    assert f"{number('wall_time_s'):.1f}" == field(html, "elapsed_s")
    assert f"{number('energy_total_j'):.1f}" == field(html, "energy_j")
    assert activity["p4m:energy_cpu_method"] == "estimated"
    assert activity["p4m:co2_method"] == "estimated"
    assert number("energy_cpu_j") > 0 and number("co2_g") > 0
    files = [e for e in document["entity"].values() if "p4m:sha256" in e and "p4m:path" in e]
    assert any(str(e["p4m:path"]).endswith(".hardware_samples.parquet") for e in files)


def test_samples_file_is_intact(burned: dict[str, Any]) -> None:
    """The saved sample series matches its recorded sha256 and covers the ≥ 2 s window."""
    import hashlib

    from jupyter_prov4ml.store.series_files import read_parquet

    document = json.loads(burned["prov_path"].read_text())
    (entity,) = [
        e for e in document["entity"].values() if str(e.get("p4m:path", "")).endswith(".parquet")
    ]
    store = burned["prov_path"].parents[3]
    path = Path(store / entity["p4m:path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entity["p4m:sha256"]
    columns = read_parquet(path)
    assert columns["elapsed_s"][-1] >= 1.9
    assert len(columns["elapsed_s"]) >= 10  # 10 Hz for ~2 s
    assert max(columns["process_cpu_percent"]) > 50
