"""Shared fixtures: an isolated real IPython shell, with what it displays captured."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_prov4ml.store import STORE_ENV

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store folder, set through the documented environment variable."""
    store = tmp_path / "store"
    monkeypatch.setenv(STORE_ENV, str(store))
    return store


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_dir: Path) -> Iterator[Any]:
    """A brand-new InteractiveShell singleton (so `display()` reaches it), history in memory,
    working directory in a temp folder, and every display captured in `shell.display_pub`."""
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance(config=config, display_pub_class=CapturingDisplayPublisher)
    yield ip
    extension = getattr(ip, "_jupyter_prov4ml", None)
    if extension is not None:
        ip.run_line_magic("unload_ext", "jupyter_prov4ml")
    ip.history_manager.end_session()
    InteractiveShell.clear_instance()


@pytest.fixture
def loaded(shell: Any) -> Any:
    """A shell with the extension loaded the way a user loads it: from a cell."""
    result = shell.run_cell("%load_ext jupyter_prov4ml")
    assert result.success, result.error_in_exec
    return shell


def displayed(shell: Any) -> list[dict[str, Any]]:
    """The mime bundles displayed so far."""
    # IPython ≥ 8 stores dicts with a "data" key; older versions stored (data, metadata).
    return [
        output["data"] if isinstance(output, dict) else output[0]
        for output in shell.display_pub.outputs
    ]


def extension_of(shell: Any) -> Any:
    return shell._jupyter_prov4ml


def journal_events(store: Path) -> list[dict[str, Any]]:
    """Every journal line of every session in a store."""
    events = []
    for journal in sorted(store.glob("sessions/*/journal.jsonl")):
        events += [json.loads(line) for line in journal.read_text().splitlines()]
    return events


def closed_runs(store: Path) -> list[dict[str, Any]]:
    return [event["run"] for event in journal_events(store) if event["event"] == "close"]


def deserialize_strict(path: Path) -> Any:
    """Read a PROV-JSON file back with `prov`, failing on any warning."""
    from prov.model import ProvDocument

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ProvDocument.deserialize(content=path.read_text(), format="json")


have_dot = shutil.which("dot") is not None


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_prov4ml.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
