"""The dashboard's process-tree row: the tree's process count, CPU and RSS, and its CPU (not
the kernel's alone) in the running energy estimate."""

from __future__ import annotations

import math

import pytest

from jupyter_prov4ml.hardware.process_tree import ProcessReading, TreeReading, TreeTick
from jupyter_prov4ml.hardware.sampler import Tick
from jupyter_prov4ml.records import HostSample


def _tick(elapsed_s: float, tree_cpu_percent: float) -> Tick:
    root = ProcessReading(1, 0, 0.0, 0.0, 2**20)
    child = ProcessReading(2, 0, 0.0, 0.0, 3 * 2**20)
    tree = TreeTick(TreeReading(elapsed_s, root, (child,)), tree_cpu_percent)
    return Tick(elapsed_s, HostSample(elapsed_s, 10.0, 2**20, 50.0, 2**30), (), tree)


def test_the_dashboard_shows_the_tree_and_counts_its_cpu() -> None:
    """Two processes at 200 % of one core for 1 s at 12 W per core: 24 J, not the kernel's
    10 % (1.2 J); the row shows 2 processes and 4 MiB. A tick too short for a CPU figure
    (NaN) falls back to the kernel's."""
    pytest.importorskip("ipywidgets")
    from jupyter_prov4ml.views.live_monitor import LiveMonitor

    monitor = LiveMonitor(
        "t", (), watts_per_core=12.0, carbon_intensity_g_per_kwh=481.0, cpu_count=2
    )
    monitor.on_tick(_tick(1.0, 200.0))
    assert monitor._cpu_j == pytest.approx(24.0)
    html = monitor._figures.value
    assert 'data-field="tree_process_count">2<' in html
    assert 'data-field="tree_rss_mib">4.0<' in html
    monitor.on_tick(_tick(1.5, math.nan))
    assert monitor._cpu_j == pytest.approx(24.0 + 0.1 * 12.0 * 0.5)
