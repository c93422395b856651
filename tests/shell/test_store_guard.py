"""A store someone else prepared is not recorded into: not owned by the user, or wider than
the configured mode, the kernel says so loudly and records into the user's private store;
the CLI reads such a store but writes nothing into it; exports are written 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, closed_runs, extension_of


@pytest.fixture
def fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    return data_home / "jupyter_prov4ml" / "prov4ml"


def _files(folder: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in folder.rglob("*")}


@pytest.mark.parametrize("who", ["world-writable", "another user's"])
def test_a_store_not_ours_is_not_recorded_into(
    shell: Any, store_dir: Path, fallback: Path, who: str, capsys: Any
) -> None:
    """`prov4ml/` made world-writable (or by another user, with her world-readable index):
    loading says in one line that it is not used and where records go instead; the cells are
    recorded there, and the prepared store is left exactly as it was."""
    store_dir.mkdir(parents=True)
    index = store_dir / "index.sqlite"
    index.write_bytes(b"")
    os.chmod(index, 0o644)
    if who == "world-writable":
        os.chmod(store_dir, 0o777)
    else:
        if os.getuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        os.chmod(store_dir, 0o755)
        os.chown(store_dir, 65534, 65534)
        os.chown(index, 65534, 65534)
    before = _files(store_dir)
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.run_cell("recorded_here = 1", store_history=True)
    assert extension_of(shell).writer.flush(timeout_s=30)
    err = capsys.readouterr().err
    assert err.count("NOT recording into") == 1, err
    assert str(fallback) in err
    assert _files(store_dir) == before
    assert "recorded_here = 1" in {r["cell"]["source"] for r in closed_runs(fallback)}


def test_a_private_store_of_ours_is_used_silently(
    shell: Any, store_dir: Path, fallback: Path, capsys: Any
) -> None:
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.run_cell("mine = 1", store_history=True)
    assert extension_of(shell).writer.flush(timeout_s=30)
    assert "NOT recording" not in capsys.readouterr().err
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert not fallback.exists()


def test_cli_reads_a_foreign_store_but_writes_nothing_into_it(
    shell: Any, store_dir: Path, tmp_path: Path
) -> None:
    """`list` on a world-writable store lists its runs, warns, and changes no file there;
    `export -o FILE` writes the file 0600 whatever the umask."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.run_cell("listed = 1", store_history=True)
    shell.run_cell("%unload_ext jupyter_prov4ml")
    os.chmod(store_dir, 0o777)
    before = _files(store_dir)
    listed = cli("list", "--store", str(store_dir), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "listed = 1" not in listed.stderr and "mode 777" in listed.stderr
    assert _files(store_dir) == before
    run_id = [r["run_id"] for r in closed_runs(store_dir)][-1]
    old_umask = os.umask(0o022)
    try:
        out = tmp_path / "run.prov.json"
        exported = cli("export", run_id, "--store", str(store_dir), "-o", str(out), cwd=tmp_path)
    finally:
        os.umask(old_umask)
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
