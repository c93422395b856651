"""`jupyter-prov4ml plot | compare | energy` and the folded `export`/`graph`, run as a user
runs them (a subprocess), on a store written by the real writer: files are valid SVG / PNG,
legends name the runs, and hostile metric and parameter names stay text."""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import STORED_SESSION_ID, cli, have_dot, stored_session

requires_dot = pytest.mark.skipif(not have_dot, reason="Graphviz's dot program is not installed")

OTHER_SESSION = "20260102T000000-fedcba"
HOSTILE = "<script>alert(1)</script>\"x'];a -> b [label=<b>y</b>]\\"
POINTS = 5_000


def write_store(root: Path) -> list[str]:
    """Four %%provrun runs written by the real store writer: three seeds of one config and a
    run with hostile metric and parameter names; each with energy and a long loss curve."""
    from jupyter_prov4ml.capture.metrics import MetricLog
    from jupyter_prov4ml.capture.recorder import OpenWindow, build_run
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.records import EnergyLedger, EnergyReading, Param
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    store = Store(root)
    writer = StoreWriter(store, stored_session(), Notices())
    writer.start()
    ids = []
    for index, (name, seed, metric) in enumerate(
        [("base", 1, "loss"), ("base", 2, "loss"), ("base", 3, "loss"), (HOSTILE, 4, HOSTILE)]
    ):
        run_id = f"{STORED_SESSION_ID}-{index + 1:05d}"
        window = OpenWindow(run_id, f"seed = {seed}", f"{index:02d}" * 32, None, time.time(), 0, 0)
        metrics = MetricLog(0)
        for step in range(POINTS):
            metrics.log(metric, math.exp(-step / 1000) + 0.01 * seed, step, "training")
            metrics.log("acc", 1 - math.exp(-step / 1000) - 0.01 * seed, step, "val")
        energy = EnergyLedger((EnergyReading("cpu", "cpu", 100.0 * seed, "estimated", 1.0),), 400)
        run = build_run(
            STORED_SESSION_ID,
            None,
            window,
            seed * 10**9,
            0,
            "provrun",
            "ok",
            None,
            index + 1,
            name=name,
            params=(Param("seed", seed), Param("lr", 0.1), Param(HOSTILE, HOSTILE)),
            energy=energy,
        )
        writer.submit_run(run, RunSeries(metrics))
        ids.append(run_id)
    assert writer.close()
    # One more run, in another kernel session on another host.
    other = replace(stored_session(OTHER_SESSION), hostname="other-host")
    writer = StoreWriter(store, other, Notices())
    writer.start()
    run_id = f"{OTHER_SESSION}-00001"
    window = OpenWindow(run_id, "seed = 1", "ff" * 32, None, time.time(), 0, 0)
    metrics = MetricLog(0)
    metrics.log("loss", 0.5, 0, "training")
    run = build_run(
        OTHER_SESSION, None, window, 10**9, 0, "provrun", "ok", None, 1, name="elsewhere"
    )
    writer.submit_run(run, RunSeries(metrics))
    assert writer.close()
    return [*ids, run_id]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("views-store") / "store"
    return root, write_store(root)


def run_cli(store: tuple[Path, list[str]], tmp_path: Path, *args: str) -> Any:
    return cli(*args, "--store", str(store[0]), cwd=tmp_path)


def test_plot_writes_svg_with_axes_legend_and_hover(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """`plot A B C --metric loss -o curves.svg`: a well-formed SVG, one line per run, the
    legend naming each run, axis labels, hover titles."""
    out = tmp_path / "curves.svg"
    result = run_cli(store, tmp_path, "plot", *store[1][:3], "--metric", "loss", "-o", str(out))
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(out.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}polyline")) == 3
    texts = [t.text for t in root.iter(f"{ns}text")]
    for run_id in store[1][:3]:
        assert f"base ({run_id.rsplit('-', 1)[-1]})" in texts
    assert "step" in texts and "loss" in texts
    assert root.findall(f".//{ns}title")
    # Thinned for display: far fewer than 3 × 5,000 points drawn.
    points = sum(len(p.get("points", "").split()) for p in root.iter(f"{ns}polyline"))
    assert points < 3 * POINTS


def test_plot_group_by_seed_and_time_axis(store: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`--group-by seed` draws one mean line with a band; `--x time` labels the axis in s."""
    out = tmp_path / "seeds.svg"
    result = run_cli(
        store, tmp_path, "plot", *store[1][:3], "--metric", "loss", "--group-by", "seed",
        "--x", "time", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("<polygon") == 1 and text.count("<polyline") == 1
    assert "time (s)" in text and "over seed (3 runs" in text


@requires_dot
def test_plot_png(store: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`-o curves.png`: a PNG image, rasterised by Graphviz (no new library)."""
    out = tmp_path / "curves.png"
    result = run_cli(store, tmp_path, "plot", *store[1][:2], "--metric", "loss", "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2_000


def test_plot_unknown_metric_is_a_usage_error(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A metric no run logged: exit 2, one line naming the metrics there are."""
    result = run_cli(store, tmp_path, "plot", store[1][0], "--metric", "nope")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "loss [training]" in result.stderr


def test_compare_text_and_html(store: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`compare A B C` prints parameters (seed marked as differing), metrics, energy; `-o
    x.html` writes the whole view with the curves."""
    result = run_cli(store, tmp_path, "compare", *store[1][:3])
    assert result.returncode == 0, result.stderr
    seed_line = next(line for line in result.stdout.splitlines() if "seed" in line)
    assert seed_line.startswith(" ~")
    lr_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("lr"))
    assert lr_line.startswith("  ")
    assert "loss [training] best (min)" in result.stdout and "energy" in result.stdout
    out = tmp_path / "compare.html"
    result = run_cli(store, tmp_path, "compare", *store[1][:3], "-o", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert "jp-prov4ml-compare" in page and "<polyline" in page


def test_energy_view(store: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`energy --metric loss --name base`: one point per run against energy and time."""
    out = tmp_path / "energy.svg"
    result = run_cli(
        store, tmp_path, "energy", "--metric", "loss", "--name", "base", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("<circle") == 6  # 3 runs, in two charts
    assert "energy (J)" in text and "wall time (s)" in text
    listed = run_cli(store, tmp_path, "energy", "--metric", "loss", "--name", "base")
    assert listed.stdout.count(" J, ") == 3


def test_hostile_names_stay_text_in_every_view(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A metric, parameter and run name made of script tags, quotes, DOT syntax and a
    trailing backslash: each file is well-formed SVG/HTML where the name is only text."""
    hostile_run = store[1][3]
    svg = tmp_path / "h.svg"
    html_out = tmp_path / "h.html"
    energy = tmp_path / "e.svg"
    assert (
        run_cli(store, tmp_path, "plot", hostile_run, store[1][0], "-o", str(svg)).returncode == 0
    )
    assert (
        run_cli(
            store, tmp_path, "compare", hostile_run, store[1][0], "-o", str(html_out)
        ).returncode
        == 0
    )
    result = run_cli(store, tmp_path, "energy", "--metric", HOSTILE, "-o", str(energy))
    assert result.returncode == 0, result.stderr
    for path in (svg, energy):
        root = ET.fromstring(path.read_text())  # well-formed: nothing broke out
        assert not list(root.iter("{http://www.w3.org/2000/svg}script"))
        texts = "".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        assert "<script>" in texts or "<script>" in "".join(
            t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")
        )
    for path in (svg, html_out, energy):
        raw = path.read_text()
        assert "<script>" not in raw and "<b>y</b>" not in raw


@requires_dot
def test_export_svg_is_folded_and_full_on_request(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """`export -f svg` draws the folded graph (parameters in one node); `--full` every
    parameter as a node of its own."""
    run_id = store[1][3]
    folded = run_cli(store, tmp_path, "export", run_id, "-f", "svg")
    full = run_cli(store, tmp_path, "export", run_id, "-f", "svg", "--full")
    assert folded.returncode == full.returncode == 0, folded.stderr + full.stderr
    assert "parameters (3)" in folded.stdout
    assert folded.stdout.count('class="node"') < full.stdout.count('class="node"')
    for out in (folded.stdout, full.stdout):
        root = ET.fromstring(out[out.index("<svg") :])
        assert not list(root.iter("{http://www.w3.org/2000/svg}script"))


@requires_dot
def test_session_graph_full_flag(store: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`graph -f svg` and `graph -f svg --full` both draw the session's lineage."""
    for extra in ((), ("--full",)):
        result = run_cli(store, tmp_path, "graph", "-f", "svg", *extra)
        assert result.returncode == 0, result.stderr
        ET.fromstring(result.stdout[result.stdout.index("<svg") :])


def test_compare_names_environment_differences(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Runs of two kernel sessions on two hosts: `compare` lists the host as differing, with
    each run's value."""
    result = run_cli(store, tmp_path, "compare", store[1][0], store[1][4])
    assert result.returncode == 0, result.stderr
    host = next(line for line in result.stdout.splitlines() if line.strip(" ~").startswith("host"))
    assert host.startswith(" ~") and "h | other-host" in host
