"""A kill between cells: a `%%provrun` the user saw end is written before the next cell runs
(a kernel SIGKILLed by the very next cell lists it `ok`, not `crashed`, even while its 200,000
points are still being saved), and plain cells older than the writer's period (0.5 s, the
README's bound) are all kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import cli

pytestmark = pytest.mark.kernel

SUICIDE = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
LARGE_RUN = """%%provrun --no-graph --no-live --name large
from jupyter_prov4ml import log_metric
for step in range(200_000):
    log_metric("loss", 1.0 / (step + 1), step=step)
"""


def _listed(tmp_path: Path, store: Path) -> dict[str, dict[str, Any]]:
    result = cli("list", "--store", str(store), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return {row["run_id"]: row for row in json.loads(result.stdout)}


@pytest.mark.parametrize("repeat", range(3))
def test_the_cells_before_a_kill_are_all_ok(tmp_path: Path, kernels: Any, repeat: int) -> None:
    store = tmp_path / "store"
    kernel = kernels(store)
    kernel.execute("%load_ext jupyter_prov4ml")
    for i in range(5):
        kernel.execute(f"cell_{i} = {i}")
    kernel.execute("import time; time.sleep(1.5)")  # the writer's period passes (a clock)
    kernel.execute(LARGE_RUN)
    kernel.execute("after_the_run = 1")
    kernel.client.execute(SUICIDE)  # the next cell kills the kernel at once
    kernel.manager.provisioner.process.wait(60)  # type: ignore[union-attr]
    rows = list(_listed(tmp_path, store).values())
    by_name = {row["name"]: row for row in rows if row["name"]}
    assert by_name["large"]["status"] == "ok", by_name["large"]
    plain = [row for row in rows if row["kind"] == "cell" and row["status"] == "ok"]
    assert len(plain) >= 5, rows  # cell_0 .. cell_4, older than the writer's period
