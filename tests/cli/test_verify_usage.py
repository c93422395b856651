"""`jupyter-prov4ml verify` on notebooks that are not what they claim (untrusted input), and
its usage errors: exit 2 with one clear line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    (store / "sessions").mkdir(parents=True, mode=0o700)
    store.chmod(0o700)
    return store


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[]", "no list of cells"),
        (b'{"cells": [1]}', "cell 1 is not an object"),
        (b'{"cells": [{"cell_type": "code", "source": 5}]}', "its source is not text"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_bad_notebooks_are_usage_errors(
    tmp_path: Path, empty_store: Path, content: bytes, message: str
) -> None:
    """Broken or hostile notebook files: exit 2, one line naming the problem."""
    notebook = tmp_path / "bad.ipynb"
    notebook.write_bytes(content)
    done = cli("verify", str(notebook), "--store", str(empty_store), cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_notebook_and_missing_store(tmp_path: Path, empty_store: Path) -> None:
    """A notebook or a store that is not there: exit 2."""
    done = cli("verify", str(tmp_path / "none.ipynb"), "--store", str(empty_store), cwd=tmp_path)
    assert done.returncode == 2 and "cannot read" in done.stderr
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(json.dumps({"cells": []}))
    done = cli("verify", str(notebook), "--store", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2 and "no provenance store" in done.stderr
    assert cli("verify", cwd=tmp_path).returncode == 2  # argparse: the notebook is required


def test_a_notebook_the_store_never_ran_is_not_clean(tmp_path: Path, empty_store: Path) -> None:
    """Outputs no recorded execution produced: exit 1, naming the first such cell."""
    notebook = tmp_path / "n.ipynb"
    cell = {"cell_type": "code", "id": "abc", "source": "x = 1", "execution_count": 1}
    notebook.write_text(json.dumps({"cells": [cell]}))
    done = cli("verify", str(notebook), "--store", str(empty_store), "--json", cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["problems"][0]["cell_id"] == "abc"
    assert "no execution recorded" in report["problems"][0]["reasons"][0]
