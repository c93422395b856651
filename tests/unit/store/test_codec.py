"""The one record codec: the per-cell fast path writes exactly what the general encoder
writes for the record the one builder makes, and every record reads back equal."""

from __future__ import annotations

import json
import math

from jupyter_prov4ml.capture.recorder import ClosedCell, OpenWindow, build_run
from jupyter_prov4ml.lineage.links import Links
from jupyter_prov4ml.records import Param, VariableSummary
from jupyter_prov4ml.store.codec import (
    closed_cell_to_dict,
    encode_line,
    plain,
    run_from_dict,
    run_to_dict,
)


def _cell(links: Links | None) -> ClosedCell:
    window = OpenWindow("s-00001", "token = 'hunter2'\nx = 1\n", "ab" * 32, "c1", 1.7e9, 10, 20)
    return ClosedCell(window, 2_000_010, 500_020, "failed", "ValueError", 7, links)


def test_fast_cell_path_matches_the_general_encoder() -> None:
    """`closed_cell_to_dict` (run for every cell) == `run_to_dict(build_run(...))` minus the
    fields a plain cell leaves empty, with and without lineage links; the source is stored
    redacted in both."""
    variable = VariableSummary("x", "int", "int", "ff" * 32)
    for links in (None, Links(("a",), (variable,), (("s-00000", ("a",)),), "cd" * 32)):
        cell = _cell(links)
        fast = closed_cell_to_dict(cell, "s", "nb.ipynb", cell.window.stored_source())
        run = build_run(
            "s",
            "nb.ipynb",
            cell.window,
            cell.ended_perf_ns,
            cell.ended_cpu_ns,
            "cell",
            cell.status,
            cell.error_type,
            cell.execution_count,
            **(
                {}
                if links is None
                else {
                    "reads": links.reads,
                    "variables": links.variables,
                    "informed_by": links.informed_by,
                    "derived_from_sha256": links.derived_from_sha256,
                }
            ),
        )
        general = run_to_dict(run)
        assert {k: v for k, v in general.items() if k in fast} == fast
        assert "hunter2" not in json.dumps(fast)
        assert run_from_dict(json.loads(encode_line("close", {"run": fast}))["run"]) == run


def test_plain_writes_strict_json_like_asdict() -> None:
    """Non-finite floats become text and tuples lists, as the journal has always written."""
    param = Param("lr", math.nan, "api")
    assert plain((param, (1.0, math.inf))) == [
        {"name": "lr", "value": "nan", "source": "api"},
        [1.0, "inf"],
    ]
