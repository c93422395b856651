"""A store copied from elsewhere is untrusted input: ids and paths read from it never lead
outside it. Each case is a store a real writer made, then tampered with as an attacker would;
the CLI (and `read_metrics`) refuse what leads out with one warning and go on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import STORED_SESSION_ID as SESSION_ID
from conftest import cli, store_with_a_run, stored_session
from jupyter_prov4ml.store.codec import session_to_dict
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.session_lock import LOCK_NAME


def _rewrite_journal(store: Store, session_id: str, edit: object) -> None:
    journal = store.journal_path(session_id)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps(edit(line)) + "\n" for line in lines))  # type: ignore[operator]
    (store.root / "index.sqlite").unlink()


def _files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


def test_a_journal_naming_another_session_recovers_nothing_outside(tmp_path: Path) -> None:
    """A dead session (its lock free) whose journal says its id is `../../outside/evil`: `list`
    recovers nothing, creates no file outside the store, and says why in one line."""
    store = Store(tmp_path / "store")
    folder = store.session_dir(SESSION_ID)
    folder.mkdir(parents=True)
    evil = stored_session("../../outside/evil")
    session_line = {
        "event": "session",
        "session": {**evil.__dict__} if hasattr(evil, "__dict__") else None,
    }

    session_line = {"event": "session", "session": session_to_dict(evil)}
    opened = {
        "event": "open",
        "run_id": "../../outside/evil-00001",
        "kind": "provrun",
        "cell_sha256": "ab" * 32,
        "cell_id": None,
        "started_at_unix_s": time.time(),
        "source": "x = 1",
        "notebook_path": None,
    }
    (folder / "journal.jsonl").write_text(
        json.dumps(session_line) + "\n" + json.dumps(opened) + "\n"
    )
    (folder / LOCK_NAME).write_text("")
    before = _files_under(tmp_path)
    result = cli("list", "--store", str(store.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    created = _files_under(tmp_path) - before
    assert all(path.is_relative_to(store.root) for path in created), sorted(created)
    assert not (tmp_path / "outside").exists()
    assert "not recovering session" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_session_folder_linked_outside_is_not_written_into(tmp_path: Path) -> None:
    """`sessions/<id>` a symlink to a folder outside the store: recovery does not write there."""
    store, _ = store_with_a_run(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    journal = store.journal_path(SESSION_ID).read_text()
    opened = {
        "event": "open",
        "run_id": "20260101T000000-fedcba-00001",
        "kind": "cell",
        "cell_sha256": "ab" * 32,
        "cell_id": None,
        "started_at_unix_s": time.time(),
        "source": "y = 2",
        "notebook_path": None,
    }
    session = json.loads(journal.splitlines()[0])
    session["session"]["session_id"] = "20260101T000000-fedcba"
    (outside / "journal.jsonl").write_text(json.dumps(session) + "\n" + json.dumps(opened) + "\n")
    (outside / LOCK_NAME).write_text("")
    os.symlink(outside, store.sessions_dir / "20260101T000000-fedcba")
    before = _files_under(outside)
    result = cli("list", "--store", str(store.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _files_under(outside) == before
    assert (outside / "journal.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize("relpath", ["../victim/metrics.parquet", "/etc/hostname"])
def test_data_file_paths_outside_the_store_are_refused(tmp_path: Path, relpath: str) -> None:
    """A run whose metrics file is recorded at a path leading out of the store: `export
    --format metrics-csv` reads nothing there (a valid metrics file is waiting there) and warns
    once; `read_metrics` likewise."""
    store, run_id = store_with_a_run(tmp_path / "store")
    victim = tmp_path / "victim"
    victim.mkdir()
    real = next(store.root.glob("sessions/*/runs/*.metrics.parquet"))
    (victim / "metrics.parquet").write_bytes(real.read_bytes())
    real.unlink()

    def edit(line: dict) -> dict:  # type: ignore[type-arg]
        if line["event"] == "close":
            for data in line["run"]["data_files"]:
                data["relpath"] = relpath
        return line

    _rewrite_journal(store, SESSION_ID, edit)
    result = cli(
        "export", run_id, "--store", str(store.root), "--format", "metrics-csv", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "name,context,step,value,time_s"
    assert "outside the store" in result.stderr
    script = (
        "import warnings, jupyter_prov4ml as p; warnings.simplefilter('error');\n"
        f"p.read_metrics({run_id!r}, store={str(store.root)!r})"
    )

    read = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert "outside the store" in read.stderr


def test_a_document_path_outside_the_store_is_not_read(tmp_path: Path) -> None:
    """A run whose PROV document is recorded outside the store: `export` builds the document
    from the record instead of reading that file, and says so."""
    store, run_id = store_with_a_run(tmp_path / "store")
    planted = tmp_path / "x" / "runs" / "planted.prov.json"
    planted.parent.mkdir(parents=True)
    planted.write_text('{"prefix": {"planted": "urn:planted#"}}')

    def edit(line: dict) -> dict:  # type: ignore[type-arg]
        if line["event"] == "close":
            line["prov_path"] = "../x/runs/planted.prov.json"
        return line

    _rewrite_journal(store, SESSION_ID, edit)
    result = cli("export", run_id, "--store", str(store.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "planted" not in result.stdout
    assert "outside the store" in result.stderr
