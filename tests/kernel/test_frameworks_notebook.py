"""notebooks/frameworks.ipynb executed headlessly with `jupyter-prov4ml run` in a real kernel:
the Lightning fit it records is what Lightning logged, and what it shows runs without error."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, cli

# Looked up, not imported: the kernel imports them (~5 s), this process need not.
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("torch", "lightning")),
    reason="torch or Lightning is not installed: the notebook trains with them",
)


def test_frameworks_notebook(tmp_path: Path) -> None:
    """Every cell runs without an error output; the `lightning-tiny` run is `ok` with its
    hyperparameters, one completed loop step per epoch, every point Lightning logged (value,
    step, context) and the surviving checkpoint's sha256."""
    from jupyter_prov4ml import read_metrics
    from jupyter_prov4ml.integrations.run_link import context_of

    notebook = tmp_path / "frameworks.ipynb"
    shutil.copyfile(REPO / "notebooks" / "frameworks.ipynb", notebook)
    store, executed_path = tmp_path / "store", tmp_path / "executed.ipynb"
    done = cli("run", str(notebook), "-o", str(executed_path), "--store", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    executed = nbformat.read(executed_path, as_version=4)
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
    last = [c for c in executed.cells if c.cell_type == "code"][-1]
    assert "verification" in last.metadata.get("tags", [])
    text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream")
    logged = json.loads(text.strip().splitlines()[-1])

    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (run,) = json.loads(listing.stdout)
    assert (run["name"], run["status"]) == ("lightning-tiny", "ok")
    assert run["params"]["lr"] == 0.05 and run["params"]["hidden"] == 16
    assert run["params"]["lightning.version"] == logged["lightning"]

    frame = read_metrics(run["run_id"], store=store)
    stored = sorted(
        zip(frame["name"], frame["context"], frame["step"], frame["value"], strict=True)
    )
    expected = sorted(
        (name, context_of(name), step, value) for name, value, step in logged["points"]
    )
    assert stored == expected
    assert {"train_loss_step", "train_loss_epoch", "val_loss"} <= {p[0] for p in stored}

    document = json.loads(Path(run["prov_path"]).read_text(encoding="utf-8"))
    steps = [
        a for a in document["activity"].values() if "LoopStep" in json.dumps(a.get("prov:type"))
    ]
    assert len(steps) == 4
    (checkpoint,) = logged["checkpoints"]
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    assert digest in json.dumps(document["entity"])
