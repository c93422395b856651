"""Reading a store is bounded, whatever it holds: a data file claiming 60 M rows, a 65 MB PROV
document, a megabyte run name and a `--last` beyond SQLite's integers give a short message and
bounded work, and a bad argument never costs the shared index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import cli, store_with_a_run


def test_a_data_file_claiming_60m_rows_is_refused_before_reading(tmp_path: Path) -> None:
    """A ~1 MB metrics file whose rows are 60,000,000 nulls: `export --format metrics-csv` and
    `read_metrics` say it holds too many rows to read, with no MemoryError or traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store, run_id = store_with_a_run(tmp_path / "store")
    metrics = next(store.root.glob("sessions/*/runs/*.metrics.parquet"))
    rows = 60_000_000
    columns = ("name", "context", "step", "value", "time_us")
    pq.write_table(pa.table({c: pa.nulls(rows, pa.int64()) for c in columns}), metrics)
    assert metrics.stat().st_size < 5_000_000
    result = cli("export", run_id, "--store", str(store.root), "-f", "metrics-csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "60,000,000 rows" in result.stderr and "Traceback" not in result.stderr
    script = f"import jupyter_prov4ml as p; p.read_metrics({run_id!r}, store={str(store.root)!r})"
    read = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert read.returncode == 0, read.stderr
    assert "60,000,000 rows" in read.stderr and "MemoryError" not in read.stderr


def test_an_oversized_document_is_not_parsed(tmp_path: Path) -> None:
    """A run's PROV document replaced by 65 MB (sparse): `export` does not hand it to `prov`
    (which takes ~8 bytes of memory a byte), and exports from the run's record instead."""
    store, run_id = store_with_a_run(tmp_path / "store")
    document = next(store.root.glob("sessions/*/runs/*.prov.json"))
    with document.open("r+b") as handle:
        handle.truncate(65 * 2**20)
    result = cli("export", run_id, "--store", str(store.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "too large to read as a document" in result.stderr
    assert json.loads(result.stdout)["prefix"]
    document.unlink()  # not a document: the suite's PROV-JSON check would read it


def test_a_huge_run_name_is_cut_in_listings(tmp_path: Path) -> None:
    """A 2 MB run name: `list` (table and JSON) and `show` print a bounded amount."""
    store, run_id = store_with_a_run(tmp_path / "store", name="n" * 2_000_000)
    for args in (("list",), ("list", "--json"), ("list", "--wide"), ("show", run_id)):
        result = cli(*args, "--store", str(store.root), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) < 20_000, (args, len(result.stdout))


@pytest.mark.parametrize("last", ["9223372036854775808", "-1", "1e3"])
def test_a_bad_last_is_a_usage_error_and_keeps_the_index(tmp_path: Path, last: str) -> None:
    store, _ = store_with_a_run(tmp_path / "store")
    assert cli("list", "--store", str(store.root), cwd=tmp_path).returncode == 0
    index = store.root / "index.sqlite"
    inode = index.stat().st_ino
    result = cli("list", "--store", str(store.root), "--last", last, cwd=tmp_path)
    assert result.returncode == 2
    assert "--last" in result.stderr and "Traceback" not in result.stderr
    assert index.stat().st_ino == inode


def test_prov_list_with_a_bad_last_is_a_usage_error(loaded: Any, store_dir: Path) -> None:
    """`%prov list --last 9223372036854775808` in a notebook: a usage error, the index kept."""
    loaded.run_cell("x = 1", store_history=True)
    assert loaded.run_cell("%prov list").success
    inode = (store_dir / "index.sqlite").stat().st_ino
    result = loaded.run_cell("%prov list --last 9223372036854775808")
    assert not result.success
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert (store_dir / "index.sqlite").stat().st_ino == inode
