"""The child processes' spool: what a child writes, and the kernel's merge of it, which reads
the files as untrusted input (bounded, bad lines skipped and counted, good ones kept)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from jupyter_prov4ml.capture import child_metrics
from jupyter_prov4ml.capture.child_metrics import (
    MAX_LINE_BYTES,
    ChildSpool,
    child_spool,
    merge_spool,
    process_rank,
)
from jupyter_prov4ml.capture.metrics import MetricError, MetricLog


def _line(**fields: object) -> str:
    entry = {
        "kind": "metric",
        "name": "loss",
        "context": "training",
        "value": 1.0,
        "step": 0,
        "time_ns": 10,
        "pid": 4242,
        "rank": None,
        "local_rank": None,
    }
    entry.update(fields)
    return json.dumps(entry) + "\n"


def test_a_child_writes_lines_the_kernel_merges_in_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Points written by a child's spool are merged into the kernel's series by time, with
    the child's pid and ranks; the kernel's own points carry its origin."""
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    log = MetricLog(0, (os.getpid(), -1, -1))
    log.log("loss", 5.0, None, "training")
    spool = ChildSpool(str(tmp_path), 777)
    spool.metric("loss", 4.0, None, "training")
    spool.metric("loss", math.inf, 9, "training")
    spool.param("lr", 0.1)
    log.log("loss", 3.0, None, "training")
    merged = merge_spool(tmp_path, log)
    assert (merged.points, merged.processes, merged.skipped_lines) == (2, 1, 0)
    series = log.series[("loss", "training")]
    assert list(series.values) == [5.0, 4.0, math.inf, 3.0]
    assert list(series.steps) == [0, 0, 9, 1]
    assert series.pids is not None and list(series.pids) == [os.getpid(), 777, 777, os.getpid()]
    assert series.ranks is not None and list(series.ranks) == [-1, 3, 3, -1]
    assert [(p.name, p.value) for p in merged.params] == [("lr", 0.1)]
    assert "777" in merged.params[0].source


def test_child_spool_is_per_process_and_absent_outside_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the spool variable there is no spool; with it, one file per pid."""
    monkeypatch.delenv(child_metrics.SPOOL_ENV, raising=False)
    assert child_spool() is None
    assert child_spool({child_metrics.SPOOL_ENV: str(tmp_path / "missing")}) is None
    spool = child_spool({child_metrics.SPOOL_ENV: str(tmp_path)})
    assert spool is not None and spool.pid == os.getpid()
    spool.metric("m", 1, None, "c")
    assert (tmp_path / f"{os.getpid()}.jsonl").is_file()


def test_a_child_refuses_what_cannot_be_stored(tmp_path: Path) -> None:
    """Bad names and values raise MetricError in the child (the API turns it into a
    warning), and write nothing."""
    spool = ChildSpool(str(tmp_path), 5)
    with pytest.raises(MetricError):
        spool.metric("", 1.0, None, "training")
    with pytest.raises(MetricError):
        spool.metric("x", "text", None, "training")
    with pytest.raises(MetricError):
        spool.metric("x", 1.0, 2**70, "training")
    assert (tmp_path / "5.jsonl").read_text() == ""


@pytest.mark.parametrize(
    "bad",
    [
        "not json\n",
        "[1, 2]\n",
        _line(kind="other"),
        _line(name=""),
        _line(name="x" * 201),
        _line(name="\ud800"),
        _line(value="1.0"),
        _line(value=True),
        _line(value=None),
        _line(step=1.5),
        _line(step=2**63),
        _line(time_ns="10"),
        _line(pid=None),
        _line(rank=-2),
        _line(rank="0"),
        json.dumps({"kind": "param", "name": "p", "value": [1], "pid": 1}) + "\n",
        json.dumps({"kind": "param", "name": 3, "value": 1, "pid": 1}) + "\n",
        '{"kind": "metric"}\n',
        _line().rstrip("\n"),  # cut by a kill mid-write
    ],
)
def test_malformed_lines_are_skipped_and_counted(tmp_path: Path, bad: str) -> None:
    """Each malformed line is skipped (counted), the good lines around it kept."""
    (tmp_path / "10.jsonl").write_text(_line(step=1) + bad + _line(step=2, time_ns=20))
    if not bad.endswith("\n"):
        (tmp_path / "10.jsonl").write_text(_line(step=1) + _line(step=2, time_ns=20) + bad)
    log = MetricLog(0)
    merged = merge_spool(tmp_path, log)
    assert merged.skipped_lines == 1
    assert merged.problems() is not None
    assert list(log.series[("loss", "training")].steps) == [1, 2]


def test_files_not_ours_oversized_and_long_lines_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only `<pid>.jsonl` regular files are read (no symlinks, no other names); a file over
    the size bound is skipped whole, a line over the line bound alone."""
    outside = tmp_path / "outside.jsonl"
    outside.write_text(_line(name="secret"))
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "20.jsonl").symlink_to(outside)
    (spool / "notes.txt").write_text(_line(name="other"))
    (spool / "21.jsonl").write_text(_line(name="big") * 1000)
    (spool / "22.jsonl").write_text(_line(name="x" * (MAX_LINE_BYTES + 1)) + _line(name="ok"))
    monkeypatch.setattr(child_metrics, "MAX_FILE_BYTES", 100_000)
    log = MetricLog(0)
    merged = merge_spool(spool, log)
    assert set(name for name, _ in log.series) == {"ok"}
    assert merged.skipped_files == 3  # the symlink, the foreign name, the oversized file
    assert merged.skipped_lines == 1


def test_the_point_bound_stops_a_flood(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_SPOOL_POINTS, points are counted as skipped, not stored."""
    monkeypatch.setattr(child_metrics, "MAX_SPOOL_POINTS", 3)
    (tmp_path / "30.jsonl").write_text("".join(_line(step=i, time_ns=i) for i in range(5)))
    log = MetricLog(0)
    merged = merge_spool(tmp_path, log)
    assert merged.points == 3 and merged.skipped_lines == 2


def test_ranks_are_small_non_negative_integers() -> None:
    """RANK/LOCAL_RANK values that are not small non-negative integers are not recorded."""
    assert process_rank({"RANK": "7"}, "RANK") == 7
    assert process_rank({}, "RANK") is None
    assert process_rank({"RANK": "-1"}, "RANK") is None
    assert process_rank({"RANK": "1" * 12}, "RANK") is None


def test_merged_points_round_trip_through_the_metrics_file(tmp_path: Path) -> None:
    """The metrics file keeps each point's pid and ranks (null where unset); a log with no
    child points stores its own pid on every point."""
    from jupyter_prov4ml.store.series_files import encode_metrics, read_metrics_file

    log = MetricLog(0, (100, -1, -1))
    log.log("a", 1.0, None, "training")
    log.log("b", 2.0, None, "training")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "200.jsonl").write_text(_line(name="a", rank=1, local_rank=0, time_ns=2**62))
    merge_spool(spool, log)
    data, summaries = encode_metrics(log)
    path = tmp_path / "m.parquet"
    path.write_bytes(data)
    columns = read_metrics_file(path)
    rows = sorted(
        zip(columns["name"], columns["pid"], columns["rank"], columns["local_rank"], strict=True)
    )
    assert rows == [("a", 100, None, None), ("a", 4242, 1, 0), ("b", 100, None, None)]
    assert {s.name: s.count for s in summaries} == {"a": 2, "b": 1}
