"""The one record codec: the per-cell fast path writes exactly what the general encoder
writes for the record the one builder makes, and every record reads back equal."""

from __future__ import annotations

import json
import math

from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow, build_run
from jupyter_prov4ml.lineage.links import Links
from jupyter_prov4ml.records import Param
from jupyter_prov4ml.store.codec import (
    cell_entry,
    encode_entry,
    encode_line,
    expand_cell,
    plain,
    run_from_dict,
    run_to_dict,
)

_WINDOW = OpenWindow("s-00001", "token = 'hunter2'\nx = 1\n", "ab" * 32, "c1", 1.7e9, 10, 20)


def _cell(links: Links | None) -> ClosedCell:
    return ClosedCell.of(_WINDOW, 2_000_010, 500_020, "failed", "ValueError", 7, links)


def test_compact_cell_line_reads_back_as_the_record_the_builder_makes() -> None:
    """A plain cell's compact journal line (written for every cell) decodes to exactly the
    record `build_run` makes of the same facts, with and without lineage links, ids of the
    session and of another one; the source is stored redacted; defaults are left out."""
    variable = ("x", "int", "int", "ff" * 32)
    bare = ("y", "str", "3 characters", None)
    links_cases = (
        None,
        Links(("a",), (variable, bare), (("s-00000", ("a",)), ("t-00003", ("b",))), "cd" * 32),
    )
    for links in links_cases:
        cell = _cell(links)
        entry = cell_entry(cell, "s", _WINDOW.stored_source(), _WINDOW.sha256)
        line = encode_entry(entry)
        run = build_run(
            "s",
            "nb.ipynb",
            _WINDOW,
            2_000_010,
            500_020,
            "cell",
            cell.status,
            cell.error_type,
            cell.execution_count,
            **(
                {}
                if links is None
                else {
                    "reads": links.reads,
                    "variables": links.summaries(),
                    "informed_by": links.informed_by,
                    "derived_from_sha256": links.derived_from_sha256,
                }
            ),
        )
        assert "hunter2" not in line and line.isascii() and line.endswith("\n")
        decoded = json.loads(line)
        assert decoded["n"] == 1 and "session_id" not in decoded
        assert run_from_dict(expand_cell(decoded, "s", "nb.ipynb")) == run
        assert (
            run_from_dict(json.loads(encode_line("close", {"run": run_to_dict(run)}))["run"]) == run
        )


def test_compact_cell_line_is_small() -> None:
    """A trivial cell's line holds no repeated constant (session id, notebook path, nulls)."""
    window = OpenWindow("s-00042", "x = 42\n", "ab" * 32, None, 1.7e9, 10, 20)
    line = encode_entry(
        cell_entry(
            ClosedCell.of(window, 99_010, 90_020, "ok", None, 42), "s", "x = 42\n", "ab" * 32
        )
    )
    assert "null" not in line and '"s-' not in line
    assert len(line) < 170, line


def test_plain_writes_strict_json_like_asdict() -> None:
    """Non-finite floats become text and tuples lists, as the journal has always written."""
    param = Param("lr", math.nan, "api")
    assert plain((param, (1.0, math.inf))) == [
        {"name": "lr", "value": "nan", "source": "api"},
        [1.0, "inf"],
    ]
