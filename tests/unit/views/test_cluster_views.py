"""The Dask rows of the live dashboard: one per worker incarnation, values escaped (worker
names and hosts come from the cluster), lost ones marked once the run has ended."""

from __future__ import annotations

from typing import Any

from jupyter_prov4ml.views.cluster_summary import MAX_WORKER_ROWS, live_worker_rows
from jupyter_prov4ml.views.live_monitor import LiveMonitor


def _sample(name: str, host: str = "node1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": host, "cpu_s": 2.0, "rss_bytes": 3 * 2**20, **extra}


def test_live_rows_escape_names_and_show_cpu_rss_gpu_energy() -> None:
    """A hostile worker name and host reach the dashboard as text, not markup; a row has
    CPU, RSS, GPU and an energy estimate."""
    gpu = {"uuid": "GPU-1", "energy_mj": 5_000, "utilization_mean_percent": 50.0}
    samples = [(_sample("<img src=x onerror=alert(1)>", "<b>h</b>", gpus=[gpu]), "running")]
    rows = live_worker_rows(lambda: samples, 10.0)
    (label, cells) = rows[0]
    assert "<img" not in label and "&lt;img" in label
    assert "<b>" not in cells
    assert "CPU 2.00 s" in cells and "RSS 3 MiB" in cells and "GPU 50 %" in cells
    assert "≈ 25.0 J" in cells  # 2 s x 10 W per core + 5 J of the GPU counter


def test_live_rows_are_bounded_and_mark_lost_workers() -> None:
    """Hundreds of workers give a bounded number of rows and a count of the rest; a worker
    found lost at the end is marked."""
    many = [(_sample(f"w{i}"), "running") for i in range(300)]
    rows = live_worker_rows(lambda: many, 10.0)
    assert len(rows) == MAX_WORKER_ROWS + 1 and "284 more" in rows[-1][1]
    (row,) = live_worker_rows(lambda: [(_sample("w0"), "lost")], 10.0)
    assert row[1].endswith("LOST")


def test_dashboard_shows_the_worker_rows_and_survives_their_failure() -> None:
    """The dashboard renders the rows it is given; a failing source drops the rows, not the
    dashboard."""
    monitor = LiveMonitor("t", (), 10.0, 400.0, 2)
    monitor.watch_cluster(lambda: live_worker_rows(lambda: [(_sample("w7"), "running")], 10.0))
    assert "Dask w7" in monitor._render("running", 1.0, None, 0.0, "estimated", 0.0)

    def broken() -> list[tuple[str, str]]:
        raise RuntimeError("cluster gone")

    monitor.watch_cluster(broken)
    assert "energy" in monitor._render("running", 1.0, None, 0.0, "estimated", 0.0)
