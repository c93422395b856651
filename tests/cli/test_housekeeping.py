"""`jupyter-prov4ml tag | note | list --tag | rm | gc` on a store recorded by a real shell:
tags, notes and deletions survive a rebuilt index, and a delete killed part-way leaves no
half run and is finished by the next one."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, extension_of

TRAIN = "%%provrun --name {name} --no-graph --no-live\nx = 1\n"
KILL_AT = "JUPYTER_PROV4ML_TEST_KILL_AT"


@dataclass
class Recorded:
    store: Path
    cwd: Path
    provruns: list[str]  # run ids of the two %%provrun cells
    plain: str  # run id of a plain cell


@pytest.fixture
def recorded(loaded: Any, store_dir: Path, tmp_path: Path) -> Recorded:
    """Two %%provrun runs and a plain cell, written; the shell's kernel session closed (as
    when the notebook was shut down), so an emptied session can be removed whole."""
    for name in ("first", "second"):
        assert loaded.run_cell(TRAIN.format(name=name), store_history=True).success
    assert loaded.run_cell("y = 2", store_history=True).success
    extension_of(loaded).flush()
    loaded.run_line_magic("unload_ext", "jupyter_prov4ml")
    runs = listing(store_dir, tmp_path)
    provruns = [run["run_id"] for run in runs if run["kind"] == "provrun"]
    plain = [run["run_id"] for run in runs if run["kind"] == "cell"]
    assert len(provruns) == 2 and plain
    return Recorded(store_dir, tmp_path, provruns, plain[-1])


def run_cli(recorded: Recorded, *args: str, kill_at: str | None = None) -> Any:
    env = {**os.environ}
    if kill_at:
        env[KILL_AT] = kill_at
    return cli(*args, "--store", str(recorded.store), cwd=recorded.cwd, env=env)


def listing(store: Path, cwd: Path, *args: str) -> list[dict[str, Any]]:
    done = cli("list", "--store", str(store), "--json", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def ids(recorded: Recorded, *args: str) -> list[str]:
    return [run["run_id"] for run in listing(recorded.store, recorded.cwd, *args)]


def run_files(recorded: Recorded, run_id: str) -> list[Path]:
    return sorted(recorded.store.glob(f"sessions/*/runs/{run_id}.*"))


def rebuild_index(store: Path) -> None:
    for path in store.glob("index.sqlite*"):
        path.unlink()


def test_tags_and_notes_survive_an_index_rebuild(recorded: Recorded) -> None:
    """Tagged runs are listed by `--tag` (and shown with their notes), before and after the
    index file is deleted."""
    first, second = recorded.provruns
    assert run_cli(recorded, "tag", first, "best", "paper").returncode == 0
    assert run_cli(recorded, "tag", second, "paper").returncode == 0
    assert run_cli(recorded, "note", first, "lr too high?").returncode == 0
    for _ in range(2):
        assert ids(recorded, "--tag", "paper") == [first, second]
        assert ids(recorded, "--tag", "best") == [first]
        shown = run_cli(recorded, "show", first).stdout
        assert "best, paper" in shown and "lr too high?" in shown
        rebuild_index(recorded.store)
    assert run_cli(recorded, "tag", first, "best", "--remove").returncode == 0
    assert ids(recorded, "--tag", "best") == []


def test_bad_tags_and_notes_are_usage_errors(recorded: Recorded) -> None:
    """A tag outside the grammar or an empty note: exit 2 and nothing recorded."""
    first = recorded.provruns[0]
    assert run_cli(recorded, "tag", first, "<b>").returncode == 2
    assert run_cli(recorded, "note", first, "  ").returncode == 2
    assert run_cli(recorded, "tag", "no-such-run", "x").returncode == 2
    assert not (recorded.store / "annotations.jsonl").exists()


def test_rm_deletes_a_run_and_its_files_for_good(recorded: Recorded) -> None:
    """`rm` removes the run from listings and its files from the store; rebuilding the index
    from the journals (which still hold its record) does not bring it back."""
    first, second = recorded.provruns
    assert run_files(recorded, first)
    done = run_cli(recorded, "rm", first[-5:])
    assert done.returncode == 0, done.stderr
    assert run_files(recorded, first) == []
    assert first not in ids(recorded) and second in ids(recorded)
    rebuild_index(recorded.store)
    assert first not in ids(recorded) and second in ids(recorded)
    assert run_cli(recorded, "show", first).returncode == 2


@pytest.mark.parametrize("kill_at", ["tombstoned", "removing"])
def test_a_delete_killed_part_way_leaves_no_half_run(recorded: Recorded, kill_at: str) -> None:
    """SIGKILLed after its tombstone (or after its first file), `rm` has already deleted the
    run as far as every reader goes; the next delete removes the files left behind."""
    first, second = recorded.provruns
    files_before = run_files(recorded, first)
    assert len(files_before) >= 2
    done = run_cli(recorded, "rm", first, kill_at=kill_at)
    assert done.returncode == -signal.SIGKILL
    left = run_files(recorded, first)
    assert left and len(left) <= len(files_before)  # killed part-way
    rebuild_index(recorded.store)
    assert first not in ids(recorded)
    assert run_cli(recorded, "show", first).returncode == 2
    finished = run_cli(recorded, "gc", "--older-than", "30d")
    assert finished.returncode == 0, finished.stderr
    assert run_files(recorded, first) == []
    assert ids(recorded).count(second) == 1


def test_gc_keeps_tagged_runs_and_removes_emptied_sessions(recorded: Recorded) -> None:
    """`gc --older-than 30d` deletes nothing recent; `--older-than 0s --keep-tagged` deletes
    every run but the tagged one; without it the emptied session goes whole."""
    first, _ = recorded.provruns
    before = ids(recorded)
    assert run_cli(recorded, "gc", "--older-than", "30d").returncode == 0
    assert ids(recorded) == before
    assert run_cli(recorded, "tag", first, "keep").returncode == 0
    dry = run_cli(recorded, "gc", "--older-than", "0s", "--keep-tagged", "--dry-run")
    assert f"would delete {len(before) - 1} run(s)" in dry.stdout
    assert run_cli(recorded, "gc", "--older-than", "0s", "--keep-tagged").returncode == 0
    assert ids(recorded) == [first]
    assert run_files(recorded, first)
    assert run_cli(recorded, "gc", "--older-than", "0s").returncode == 0
    assert ids(recorded) == []
    assert list((recorded.store / "sessions").iterdir()) == []


def test_gc_killed_after_moving_a_session_to_the_trash(recorded: Recorded) -> None:
    """Killed between moving an emptied session aside and removing it, `gc` leaves no run
    listed; the next `gc` empties the trash."""
    done = run_cli(recorded, "gc", "--older-than", "0s", kill_at="trashed")
    assert done.returncode == -signal.SIGKILL
    assert list((recorded.store / "sessions").iterdir()) == []
    assert any((recorded.store / "trash").iterdir())
    rebuild_index(recorded.store)
    assert ids(recorded) == []
    assert run_cli(recorded, "gc", "--older-than", "0s").returncode == 0
    assert not any((recorded.store / "trash").iterdir())


def test_bad_gc_age_is_a_usage_error(recorded: Recorded) -> None:
    """An age that is not `N[smhdw]` is refused before anything is deleted."""
    done = run_cli(recorded, "gc", "--older-than", "soon")
    assert done.returncode == 2
    assert "not an age" in done.stderr
    assert len(ids(recorded)) >= 3


def test_damaged_annotations_are_read_within_bounds(recorded: Recorded) -> None:
    """Lines not ours in annotations.jsonl (bad ids, paths, garbage) are skipped with one
    warning; the valid ones still apply."""
    first, second = recorded.provruns
    assert run_cli(recorded, "tag", first, "ok").returncode == 0
    with (recorded.store / "annotations.jsonl").open("a") as out:
        out.write('{"event": "delete", "run_id": "../../x", "session_id": "s"}\n')
        out.write('{"event": "tag", "run_id": "' + second + '", "tags": ["<script>"]}\n')
        out.write("not json\n" + "x" * 100_000 + "\n")
    done = cli("list", "--store", str(recorded.store), "--tag", "ok", "--json", cwd=recorded.cwd)
    assert [run["run_id"] for run in json.loads(done.stdout)] == [first]
    assert "damaged line" in done.stderr


def test_notes_are_redacted_before_they_are_written(recorded: Recorded) -> None:
    """A secret pasted into a note never reaches the store's files."""
    first = recorded.provruns[0]
    done = run_cli(recorded, "note", first, "rerun with password=hunter2")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in (recorded.store / "annotations.jsonl").read_text()
    assert "rerun with password=" in run_cli(recorded, "show", first).stdout


def test_rm_never_deletes_where_a_link_in_the_store_leads(recorded: Recorded) -> None:
    """A copied store whose `runs` folder is a link elsewhere: `rm` hides the run but
    removes nothing outside the store."""
    first = recorded.provruns[0]
    (runs_dir,) = {path.parent for path in run_files(recorded, first)}
    outside = recorded.cwd / "outside"
    runs_dir.rename(outside)
    runs_dir.symlink_to(outside, target_is_directory=True)
    kept = sorted(outside.iterdir())
    assert run_cli(recorded, "rm", first).returncode == 0
    assert sorted(outside.iterdir()) == kept
    assert first not in ids(recorded)
