"""End to end through a real kernel: the metrics API on notebooks/training.ipynb."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import REPO, cli, deserialize_strict

pytestmark = pytest.mark.kernel

METRIC_COLUMNS = ["name", "context", "step", "value", "time_s"]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Execute notebooks/training.ipynb headlessly once, from a temp folder (where the
    notebook writes checkpoint.npz), for all tests of this module."""
    work = tmp_path_factory.mktemp("training")
    notebook = work / "training.ipynb"
    shutil.copyfile(REPO / "notebooks" / "training.ipynb", notebook)
    store = work / "store"
    executed_path = work / "executed.ipynb"
    done = cli("run", str(notebook), "-o", str(executed_path), "--store", str(store), cwd=work)
    assert done.returncode == 0, done.stderr
    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=work)
    assert listing.returncode == 0, listing.stderr
    runs = json.loads(listing.stdout)
    (run,) = [r for r in runs if r["name"] == "mlp-train"]
    executed = nbformat.read(executed_path, as_version=4)
    prov_path = Path(run["prov_path"])
    return {
        "work": work,
        "store": store,
        "executed": executed,
        "run": run,
        "prov_path": prov_path,
        "document": json.loads(prov_path.read_text()),
        "metrics_path": prov_path.with_name(f"{run['run_id']}.metrics.parquet"),
        "logged": logged_by_notebook(executed),
    }


def logged_by_notebook(executed: Any) -> dict[str, Any]:
    """The JSON the notebook's last (verification) cell prints: what the loop logged."""
    cell = [c for c in executed.cells if c.cell_type == "code"][-1]
    assert "verification" in cell.metadata.get("tags", [])
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return dict(json.loads(text.strip().splitlines()[-1]))


def read_metric_file(path: Path) -> dict[str, list[Any]]:
    """The stored metric points, column by column, straight from the Parquet file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    # The file keeps times as integer microseconds (`time_us`); read_metrics shows seconds.
    assert table.column_names[:4] == METRIC_COLUMNS[:4]
    assert table.column_names[4:5] in (["time_s"], ["time_us"])
    # then the process that logged each point (files written since child processes' metrics)
    assert table.column_names[5:] in ([], ["pid", "rank", "local_rank"])
    return {name: table.column(name).to_pylist() for name in table.column_names}


def series(columns: dict[str, list[Any]], name: str, context: str) -> list[tuple[int, float]]:
    """(step, value) of one metric, in step order."""
    points = zip(
        columns["name"], columns["context"], columns["step"], columns["value"], strict=True
    )
    return sorted((s, v) for n, c, s, v in points if n == name and c == context)


def prov_type(element: dict[str, Any]) -> Any:
    """PROV-JSON writes a qualified-name type as {"$": name, "type": "prov:QUALIFIED_NAME"}."""
    value = element.get("prov:type")
    return value.get("$") if isinstance(value, dict) else value


def plain(value: Any) -> Any:
    """A PROV-JSON attribute value without its datatype wrapper, if any."""
    return value["$"] if isinstance(value, dict) else value


def number(value: Any) -> float:
    return float(plain(value))


def test_notebook_runs_without_error(training_run: dict[str, Any]) -> None:
    """Every cell runs, no output is an error or a traceback, and the checkpoint is written
    next to the notebook."""
    for cell in training_run["executed"].cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error"
            assert "Traceback" not in json.dumps(output)
    assert (training_run["work"] / "checkpoint.npz").is_file()
    assert training_run["run"]["status"] == "ok"


def test_run_lists_its_hyperparameters(training_run: dict[str, Any]) -> None:
    """`list --json` shows the run's literal hyperparameters (tuple assignments too),
    matching the values the notebook reports."""
    params, logged = training_run["run"]["params"], training_run["logged"]
    assert params["hidden_units"] == 64
    assert params["batch_size"] == logged["batch_size"] == 32
    assert params["epochs"] == logged["epochs"] == 15
    assert params["lr"] == 0.3 and params["seed"] == 0
    assert training_run["run"]["kind"] == "provrun"


def test_validation_accuracy_is_stored_exactly(training_run: dict[str, Any]) -> None:
    """The Parquet file holds, per epoch, exactly the float the notebook computed for each
    per-epoch metric (validation accuracy first among them): storage is lossless."""
    columns = read_metric_file(training_run["metrics_path"])
    history, epochs = training_run["logged"]["history"], training_run["logged"]["epochs"]
    val_accuracy = series(columns, "accuracy", "validation")
    assert [step for step, _ in val_accuracy] == list(range(epochs))
    assert [value for _, value in val_accuracy] == history["val_accuracy"]
    for name, context, key in [
        ("loss", "validation", "val_loss"),
        ("loss", "training", "train_loss"),
        ("accuracy", "training", "train_accuracy"),
    ]:
        assert [v for _, v in series(columns, name, context)] == history[key], key
    assert all(isinstance(step, int) for step in columns["step"])
    assert all(isinstance(value, float) for value in columns["value"])


def test_one_batch_loss_point_per_batch(training_run: dict[str, Any]) -> None:
    """Batch loss has epochs × batches-per-epoch points at global steps 0, 1, …, with the
    notebook's exact values."""
    logged = training_run["logged"]
    batches_per_epoch = math.ceil(logged["n_train"] / logged["batch_size"])
    columns = read_metric_file(training_run["metrics_path"])
    batch_loss = series(columns, "batch_loss", "training")
    assert len(batch_loss) == logged["epochs"] * batches_per_epoch
    assert [step for step, _ in batch_loss] == list(range(len(batch_loss)))
    assert [value for _, value in batch_loss] == logged["history"]["batch_loss"]
    assert len(columns["name"]) == len(batch_loss) + 4 * logged["epochs"]


def test_read_metrics_matches_the_file(training_run: dict[str, Any]) -> None:
    """`read_metrics(run_id, store=…)` returns the same points as the stored Parquet file."""
    from jupyter_prov4ml import read_metrics

    metrics = read_metrics(training_run["run"]["run_id"], store=training_run["store"])
    assert list(metrics) == [*METRIC_COLUMNS, "pid", "rank", "local_rank"]
    read = {column: list(metrics[column]) for column in METRIC_COLUMNS}
    stored = read_metric_file(training_run["metrics_path"])
    for column in METRIC_COLUMNS[:4]:
        assert read[column] == stored[column], column
    seconds = stored.get("time_s") or [us / 1e6 for us in stored["time_us"]]
    assert read["time_s"] == pytest.approx(seconds, abs=1e-6)
    assert all(isinstance(t, float) and t >= 0 for t in read["time_s"])


def test_one_loop_step_per_epoch(training_run: dict[str, Any]) -> None:
    """The PROV-JSON has exactly one LoopStep activity per epoch (the batch loop folded into
    its epoch), indexed 0…epochs-1, each with its wall time and each informed by the run."""
    document, epochs = training_run["document"], training_run["logged"]["epochs"]
    activities = document["activity"]
    (run_id,) = [key for key, a in activities.items() if prov_type(a) == "p4m:ProvRun"]
    steps = {key: a for key, a in activities.items() if prov_type(a) == "p4m:LoopStep"}
    assert len(steps) == epochs
    assert {plain(a["p4m:loop"]) for a in steps.values()} == {"epoch"}
    assert sorted(int(number(a["p4m:index"])) for a in steps.values()) == list(range(epochs))
    assert all(number(a["p4m:wall_time_s"]) > 0 for a in steps.values())
    informed = {
        relation["prov:informed"]
        for relation in document.get("wasInformedBy", {}).values()
        if relation.get("prov:informant") == run_id
    }
    assert set(steps) <= informed


def test_metric_summaries_in_prov(training_run: dict[str, Any]) -> None:
    """The validation-accuracy summary entity agrees with the notebook's values: count, first,
    last, min, max and the epochs where the extremes were reached."""
    values = training_run["logged"]["history"]["val_accuracy"]
    (summary,) = [
        e
        for e in training_run["document"]["entity"].values()
        if plain(e.get("p4m:name")) == "accuracy" and plain(e.get("p4m:context")) == "validation"
    ]
    assert int(number(summary["p4m:count"])) == len(values)
    assert number(summary["p4m:first"]) == values[0]
    assert number(summary["p4m:last"]) == values[-1]
    assert number(summary["p4m:min"]) == min(values)
    assert number(summary["p4m:max"]) == max(values)
    assert int(number(summary["p4m:step_of_max"])) == values.index(max(values))
    assert int(number(summary["p4m:step_of_min"])) == values.index(min(values))


def test_checkpoint_artifact_has_the_file_sha256(training_run: dict[str, Any]) -> None:
    """The checkpoint's artifact entity carries the SHA-256 (and size) of checkpoint.npz."""
    checkpoint = training_run["work"] / "checkpoint.npz"
    artifacts = [
        e
        for e in training_run["document"]["entity"].values()
        if "p4m:sha256" in e
        and (
            plain(e.get("p4m:name")) == "checkpoint"
            or str(plain(e.get("p4m:path", ""))).endswith("checkpoint.npz")
        )
    ]
    assert len(artifacts) == 1
    data = checkpoint.read_bytes()
    assert plain(artifacts[0]["p4m:sha256"]) == hashlib.sha256(data).hexdigest()
    if "p4m:size" in artifacts[0]:
        assert int(number(artifacts[0]["p4m:size"])) == len(data)


def test_export_metrics_csv(training_run: dict[str, Any]) -> None:
    """`export RUN --format metrics-csv` prints the header and one row per stored point."""
    done = cli(
        "export",
        training_run["run"]["run_id"],
        "--store",
        str(training_run["store"]),
        "--format",
        "metrics-csv",
        cwd=training_run["work"],
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == METRIC_COLUMNS
    columns = read_metric_file(training_run["metrics_path"])
    assert len(rows) - 1 == len(columns["name"])
    val_accuracy = [float(r[3]) for r in rows[1:] if r[0] == "accuracy" and r[1] == "validation"]
    assert val_accuracy == training_run["logged"]["history"]["val_accuracy"]


def test_every_prov_document_deserializes(training_run: dict[str, Any]) -> None:
    """Every PROV-JSON file in the store reads back with `prov` without a warning."""
    documents = list(training_run["store"].glob("sessions/*/**/*.prov.json"))
    assert training_run["prov_path"] in documents
    for path in documents:
        deserialize_strict(path)
