"""The training-loop API (log_param, log_metric, track, log_artifact, read_metrics) through a
real IPython shell: what it stores, what it refuses, and that it never raises into user code."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jupyter_prov4ml
from conftest import closed_runs, deserialize_strict
from jupyter_prov4ml.cli.main import main as cli_main
from jupyter_prov4ml.store.series_files import read_metrics_file


def run(shell: Any, source: str) -> Any:
    """Run a cell, then write everything; our own notices are returned, not printed."""
    result = shell.run_cell(source, store_history=True)
    extension = shell._jupyter_prov4ml
    assert extension.writer.flush(timeout_s=60)
    return result


def last_run(store: Path) -> dict[str, Any]:
    return closed_runs(store)[-1]


def metrics_of(store: Path, record: dict[str, Any]) -> dict[str, list[Any]]:
    (data,) = [f for f in record["data_files"] if f["role"] == "metrics"]
    return read_metrics_file(store / data["relpath"])


def points(columns: dict[str, list[Any]], name: str, context: str = "training") -> list[Any]:
    return [
        (s, v)
        for n, c, s, v in zip(
            columns["name"], columns["context"], columns["step"], columns["value"], strict=True
        )
        if n == name and c == context
    ]


def test_values_of_every_kind_are_stored_losslessly(loaded: Any, store_dir: Path) -> None:
    """Python, numpy and framework-like scalars are stored as float64; NaN and infinities as
    such; steps default to 0, 1, 2 … and accept numpy ints and huge values."""
    loaded.user_ns.update(np=np)
    run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_metric\n"
        "class Tensor:\n"
        "    def __float__(self): return 0.25\n"
        "for value in (1, 0.1 + 0.2, np.float32(1.5), np.array(2.5), True, Tensor()):\n"
        "    log_metric('v', value)\n"
        "log_metric('special', float('nan'), step=np.int64(7))\n"
        "log_metric('special', float('inf'), step=2**62)\n"
        "log_metric('special', -float('inf'), step=3.0)\n",
    )
    columns = metrics_of(store_dir, last_run(store_dir))
    assert points(columns, "v") == [
        (0, 1.0),
        (1, 0.1 + 0.2),
        (2, 1.5),
        (3, 2.5),
        (4, 1.0),
        (5, 0.25),
    ]
    special = points(columns, "special")
    assert [s for s, _ in special] == [7, 2**62, 3]
    assert math.isnan(special[0][1]) and special[1][1] == math.inf and special[2][1] == -math.inf


def test_bad_values_warn_once_and_are_skipped(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """Wrong types, bad steps and bad names: one short warning line each kind, the point is
    skipped, the cell goes on and no traceback is printed."""
    result = run(
        loaded,
        "from jupyter_prov4ml import log_metric\n"
        "for _ in range(3):\n"
        "    log_metric('loss', 'high')\n"
        "log_metric('loss', [1, 2])\n"
        "log_metric('loss', 1.0, step=2**64)\n"
        "log_metric('loss', 1.0, step='one')\n"
        "log_metric('', 1.0)\n"
        "log_metric('x' * 500, 1.0)\n"
        "log_metric('loss', 0.5)\n"
        "done = True\n",
    )
    assert result.success and loaded.user_ns["done"] is True
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("log_metric('loss'): a metric value must be a number, not str") == 1
    assert "cannot store list" not in err, "one line per metric and kind of problem"
    assert err.count("log_metric('loss'): step") == 1 and "64 bits" in err
    assert "a step must be an integer" not in err
    assert "non-empty" in err and "limited to 200 characters" in err
    assert points(metrics_of(store_dir, last_run(store_dir)), "loss") == [(0, 0.5)]


def test_rerun_starts_fresh(loaded: Any, store_dir: Path) -> None:
    """Running the same cell twice gives two runs, each with only its own points (yProv4ML
    leaks metrics across runs in one process)."""
    cell = (
        "%%provrun --no-graph\nfrom jupyter_prov4ml import log_metric\n"
        "for i in range(5):\n    log_metric('loss', float(i))\n"
    )
    run(loaded, cell)
    run(loaded, cell)
    first, second = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert first["run_id"] != second["run_id"]
    for record in (first, second):
        assert points(metrics_of(store_dir, record), "loss") == [(i, float(i)) for i in range(5)]
        (summary,) = record["metrics"]
        assert summary["count"] == 5


def test_summaries_in_prov(loaded: Any, store_dir: Path) -> None:
    """The PROV document carries count/first/last/min/max and the steps of min and max."""
    run(
        loaded,
        "%%provrun --no-graph\nfrom jupyter_prov4ml import log_metric\n"
        "for step, value in enumerate([3.0, 1.0, float('nan'), 4.0, 2.0]):\n"
        "    log_metric('loss', value, step=10 * step, context='validation')\n",
    )
    record = last_run(store_dir)
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    deserialize_strict(path)
    (metric,) = [
        e for e in json.loads(path.read_text())["entity"].values() if "p4m:step_of_min" in e
    ]

    def number(key: str) -> float:
        value = metric[f"p4m:{key}"]
        return float(value["$"] if isinstance(value, dict) else value)

    assert metric["p4m:context"] == "validation"
    assert (number("count"), number("first"), number("last")) == (5, 3.0, 2.0)
    assert (number("min"), number("max")) == (1.0, 4.0)
    assert (number("step_of_min"), number("step_of_max")) == (10, 30)


def test_a_million_points(loaded: Any, store_dir: Path) -> None:
    """10⁶ points are all stored, exactly, in a compact file."""
    run(
        loaded,
        "%%provrun --no-graph --no-live\nfrom jupyter_prov4ml import log_metric\n"
        "for i in range(1_000_000):\n    log_metric('loss', 1.0 / (i + 1), step=i)\n",
    )
    record = last_run(store_dir)
    (data,) = [f for f in record["data_files"] if f["role"] == "metrics"]
    columns = read_metrics_file(store_dir / data["relpath"])
    assert len(columns["value"]) == 1_000_000
    assert columns["value"][999_999] == 1.0 / 1_000_000 and columns["step"][-1] == 999_999
    assert data["size_bytes"] < 8 * 2**20


def test_track_makes_one_step_per_outer_iteration(loaded: Any, store_dir: Path) -> None:
    """Each outer iteration is one loop step with its own time, CPU and energy; the inner
    tracked loop is counted into it; metrics logged during a step are attached to it."""
    run(
        loaded,
        "%%provrun --no-graph\nfrom jupyter_prov4ml import track, log_metric\n"
        "for epoch in track(range(4), name='epoch'):\n"
        "    for batch in track(range(25), name='batch'):\n"
        "        sum(range(1000))\n"
        "    log_metric('acc', epoch / 4, step=epoch, context='validation')\n",
    )
    record = last_run(store_dir)
    steps = record["steps"]
    assert [s["index"] for s in steps] == [0, 1, 2, 3]
    assert all(s["loop"] == "epoch" and s["completed"] for s in steps)
    assert all(dict(s["inner_iterations"]) == {"batch": 25} for s in steps)
    assert all(s["energy"]["readings"][0]["method"] == "estimated" for s in steps)
    assert [dict(s["metrics_last"]) for s in steps] == [{"acc/validation": e / 4} for e in range(4)]
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    document = json.loads(path.read_text())
    step_ids = [k for k, v in document["activity"].items() if "p4m:loop" in v]
    assert len(step_ids) == 4
    informed = {r["prov:informed"] for r in document["wasInformedBy"].values()}
    assert informed == set(step_ids)


def test_loop_left_early_and_failed_cell(loaded: Any, store_dir: Path) -> None:
    """A loop that raises mid-step keeps the steps so far; the unfinished step is marked so,
    and the run is saved `failed`."""
    result = run(
        loaded,
        "%%provrun --no-graph\nfrom jupyter_prov4ml import track\n"
        "for epoch in track(range(10)):\n"
        "    if epoch == 3:\n"
        "        raise RuntimeError('diverged')\n",
    )
    assert isinstance(result.error_in_exec, RuntimeError)
    record = last_run(store_dir)
    assert record["status"] == "failed"
    assert [(s["index"], s["completed"]) for s in record["steps"]] == [
        (0, True),
        (1, True),
        (2, True),
        (3, False),
    ]


def test_params_and_artifacts(loaded: Any, store_dir: Path, tmp_path: Path) -> None:
    """log_param(s) add parameters; log_artifact records sha256 and size without copying, or
    copies into the store when asked; a missing file is one warning, not an error."""
    checkpoint = tmp_path / "model.bin"
    checkpoint.write_bytes(b"weights" * 1000)
    loaded.user_ns["checkpoint"] = str(checkpoint)
    result = run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_param, log_params, log_artifact\n"
        "log_param('optimizer', 'adam')\n"
        "log_params({'layers': 3, 'dropout': 0.1, 'shape': (3, 4)})\n"
        "log_artifact(checkpoint, name='checkpoint')\n"
        "log_artifact(checkpoint, name='copy', copy=True)\n"
        "log_artifact('missing.bin')\n",
    )
    assert result.success
    record = last_run(store_dir)
    params = {p["name"]: (p["value"], p["source"]) for p in record["params"]}
    assert params["optimizer"] == ("adam", "api") and params["layers"] == (3, "api")
    assert params["shape"] == ("(3, 4)", "api")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    artifacts = {a["name"]: a for a in record["artifacts"]}
    assert artifacts["checkpoint"]["sha256"] == digest
    assert artifacts["checkpoint"]["size_bytes"] == 7000
    assert artifacts["checkpoint"]["copied_to"] is None
    copied = Path(artifacts["copy"]["copied_to"])
    assert copied.is_relative_to(store_dir) and copied.read_bytes() == checkpoint.read_bytes()


def test_api_in_a_plain_cell_attaches_to_its_record(loaded: Any, store_dir: Path) -> None:
    """Outside %%provrun, the calls attach to the running cell's own record and document."""
    run(
        loaded,
        "from jupyter_prov4ml import log_metric, track\n"
        "for epoch in track(range(2)):\n    log_metric('loss', 1.0 / (epoch + 1))\n",
    )
    record = last_run(store_dir)
    assert record["kind"] == "cell" and len(record["steps"]) == 2
    assert points(metrics_of(store_dir, record), "loss") == [(0, 1.0), (1, 0.5)]
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    deserialize_strict(path)


def test_metrics_from_a_thread_during_the_cell(loaded: Any, store_dir: Path) -> None:
    """A data-loader thread may log while the cell runs."""
    run(
        loaded,
        "%%provrun --no-graph\nimport threading\nfrom jupyter_prov4ml import log_metric\n"
        "t = threading.Thread(target=lambda: [log_metric('io', float(i)) for i in range(100)])\n"
        "t.start(); t.join()\n",
    )
    assert len(points(metrics_of(store_dir, last_run(store_dir)), "io")) == 100


def test_read_metrics_and_csv_export(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """read_metrics gives the points (a DataFrame where pandas exists); the CLI's metrics-csv
    export gives the same rows."""
    run(
        loaded,
        "%%provrun --no-graph\nfrom jupyter_prov4ml import log_metrics\n"
        "for i in range(3):\n    log_metrics({'loss': 1.0 / (i + 1), 'acc': i / 3}, step=i)\n",
    )
    run_id = last_run(store_dir)["run_id"]
    table = jupyter_prov4ml.read_metrics(run_id)
    columns = {k: list(table[k]) for k in ("name", "step", "value")}
    assert sorted(zip(columns["name"], columns["step"], columns["value"], strict=True)) == sorted(
        [("loss", i, 1.0 / (i + 1)) for i in range(3)] + [("acc", i, i / 3) for i in range(3)]
    )
    capsys.readouterr()
    assert cli_main(["export", run_id, "--store", str(store_dir), "-f", "metrics-csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "name,context,step,value,time_s" and len(lines) == 7
    assert "loss,training,2,0.3333333333333333," in "\n".join(lines)


def test_without_the_extension_nothing_breaks() -> None:
    """Not loaded: the calls warn and do nothing, and track passes the loop through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jupyter_prov4ml.log_metric("loss", 1.0)
        assert list(jupyter_prov4ml.track(range(3))) == [0, 1, 2]
    assert caught and all("not loaded" in str(w.message) for w in caught)


def test_live_view_shows_progress_and_metrics() -> None:
    """The dashboard shows loop progress (i/N, rate) and each metric's last value."""
    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware.sampler import Tick
    from jupyter_prov4ml.records import HostSample
    from jupyter_prov4ml.views.live_monitor import LiveMonitor, sparkline

    capture = RunCapture(0)
    monitor = LiveMonitor("t", (), 12.0, 481.0, 2)
    monitor.watch(capture)
    for epoch in capture.loops.track(range(5), "epoch", None):
        capture.metrics.log("loss", 1.0 / (epoch + 1), epoch, "training")
        if epoch == 2:
            break
    monitor.on_tick(Tick(1.0, HostSample(1.0, 50.0, 2**20, 10.0, 2**30), ()))
    value = monitor._figures.value
    assert 'data-field="loop_done">2/5<' in value
    assert 'data-field="metric:loss/training">0.33333<' in value
    assert sparkline([1.0, 0.5, 0.25]) == "█▃▁"
    assert pytest.approx(0) == 0


def test_many_steps_are_bounded_in_prov_and_all_kept_in_a_file(
    loaded: Any, store_dir: Path
) -> None:
    """5,000 steps: the PROV document and journal describe 1,000 of them (first and last
    included), the run says how many there were, and the steps file holds all 5,000."""
    import pyarrow.parquet as pq

    run(
        loaded,
        "%%provrun --no-graph --no-live\nfrom jupyter_prov4ml import track\n"
        "for step in track(range(5000), name='batch'):\n    pass\n",
    )
    record = last_run(store_dir)
    assert record["steps_total"] == 5000 and len(record["steps"]) == 1000
    assert record["steps"][0]["index"] == 0 and record["steps"][-1]["index"] == 4999
    (steps_file,) = [f for f in record["data_files"] if f["role"] == "steps"]
    table = pq.read_table(store_dir / steps_file["relpath"])
    assert table.num_rows == 5000 and table.column("index").to_pylist() == list(range(5000))
    (path,) = store_dir.glob(f"sessions/*/runs/{record['run_id']}.prov.json")
    document = json.loads(path.read_text())
    steps = [a for a in document["activity"].values() if "p4m:loop" in a]
    assert len(steps) == 1000
