"""Lineage bookkeeping on its own: who informed whom, versions, staleness, value summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

from jupyter_prov4ml.lineage.links import Lineage, bound_values, summarize

F = frozenset


def record(
    lineage: Lineage,
    run: str,
    cell: str,
    sha: str,
    ns: dict[str, Any],
    reads: set[str],
    binds: set[str],
    ok: bool = True,
    deletes: frozenset[str] = frozenset(),
) -> Any:
    """One execution: run ids are `r<count>` so the execution count is the number."""
    bound = bound_values(F(binds), ns)
    return lineage.record(run, cell, sha, int(run[1:]), F(reads), bound, deletes, ok)


def test_informed_by_the_last_binder() -> None:
    """A read is linked to the execution that last bound the name, with the names."""
    lineage, ns = Lineage(), {"a": 1, "b": 2}
    record(lineage, "r1", "c1", "s1", ns, set(), {"a"})
    record(lineage, "r2", "c2", "s2", ns, set(), {"b"})
    links = record(lineage, "r3", "c3", "s3", ns, {"a", "b", "print"}, set())
    assert links.reads == ("a", "b")  # `print` was never bound by a recorded cell
    assert links.informed_by == (("r1", ("a",)), ("r2", ("b",)))


def test_new_version_is_derived_and_makes_readers_stale() -> None:
    """Re-running an edited cell derives the new version from the old; a cell that read a
    name it rebound is stale, one that read something else is not."""
    lineage, ns = Lineage(), {"a": 1, "b": 2, "c": 3}
    record(lineage, "r1", "c1", "s1", ns, set(), {"a"})
    record(lineage, "r2", "c2", "s2", ns, {"a"}, {"b"})
    record(lineage, "r3", "c3", "s3", ns, {"b"}, {"c"})
    ns["a"] = 5
    links = record(lineage, "r4", "c1", "s1-edited", ns, set(), {"a"})
    assert links.derived_from_sha256 == "s1"
    stale = lineage.stale_cells()
    assert [cell.cell_id for cell in stale] == ["c2"]
    assert "`a` was rebound by [4]" in stale[0].reasons[0]


def test_input_from_an_old_version() -> None:
    """A name still bound by an old version of a cell (the new version no longer binds it)
    is an input from code that no longer exists."""
    lineage, ns = Lineage(), {"x": 1}
    record(lineage, "r1", "c1", "old", ns, set(), {"x"})
    record(lineage, "r2", "c2", "s2", ns, {"x"}, set())
    record(lineage, "r3", "c1", "new", ns, set(), set())
    (stale,) = lineage.stale_cells()
    assert stale.cell_id == "c2" and "old version" in stale.reasons[0]
    assert lineage.stale_inputs(("x",)) == ["x"]


def test_edited_source_and_out_of_order_from_the_notebook() -> None:
    """With the notebook's current sources and positions: an edited cell is stale, and a
    cell that read a name bound by a cell below it ran out of order."""
    lineage, ns = Lineage(), {"late": 1}
    record(lineage, "r1", "below", "s1", ns, set(), {"late"})
    record(lineage, "r2", "above", "s2", ns, {"late"}, set())
    import hashlib

    sources = {"below": "changed = 1", "above": "print(late)"}
    digest = hashlib.sha256(b"print(late)").hexdigest()
    record(lineage, "r3", "above", digest, ns, {"late"}, set())
    stale = {
        cell.cell_id: cell.reasons
        for cell in lineage.stale_cells(sources, {"above": 0, "below": 1})
    }
    assert stale["below"] == ("its source changed after it ran",)
    assert stale["above"] == ("out of order: `late` comes from a cell below it",)


def test_failed_cell_binds_only_what_changed() -> None:
    """A failed cell counts as binding only the names whose object actually changed."""
    lineage, ns = Lineage(), {"a": object(), "b": object()}
    record(lineage, "r1", "c1", "s1", ns, set(), {"a", "b"})
    ns["a"] = object()
    links = record(lineage, "r2", "c2", "s2", ns, set(), {"a", "b"}, ok=False)
    assert [v.name for v in links.summaries()] == ["a"]
    assert lineage.last_binder == {"a": "r2", "b": "r1"}


def test_deleted_names() -> None:
    """`del x` ends the binding; a cell that had read it is stale."""
    lineage, ns = Lineage(), {"x": 1}
    record(lineage, "r1", "c1", "s1", ns, set(), {"x"})
    record(lineage, "r2", "c2", "s2", ns, {"x"}, set())
    record(lineage, "r3", "c3", "s3", {}, set(), set(), deletes=frozenset({"x"}))
    assert "deleted" in lineage.stale_cells()[0].reasons[0]


def test_memory_follows_cells_not_executions() -> None:
    """10,000 executions of a few cells keep a bounded amount of state."""
    lineage, ns = Lineage(), {"a": 1, "b": 2}
    for i in range(1, 10_001):
        record(
            lineage, f"r{i}", f"c{i % 3}", f"s{i % 3}", ns, {"a", "b"}, {"a"} if i % 2 else {"b"}
        )
    assert len(lineage.cells) == 3
    assert len(lineage._binders) < 100


def test_summaries_never_store_values() -> None:
    """Values are described and hashed when cheap, never stored; big arrays are not hashed."""
    small = summarize("w", np.zeros((2, 3)))
    assert small.type_name == "numpy.ndarray" and small.description == "shape (2, 3) float64"
    assert small.value_sha256 is not None
    big = summarize("w", np.zeros(1_000_000))
    assert big.value_sha256 is None
    assert summarize("s", "secret text").description == "11 characters"
    assert summarize("n", 3).description == "3"
    assert summarize("d", {"a": 1}).description == "1 items"

    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError("user code must not run")

    assert summarize("h", Hostile()).description == ""


def test_replay_from_records_finds_the_same_stale_cells() -> None:
    """Rebuilt from recorded runs alone (no kernel), the lineage names the same stale cells."""
    from jupyter_prov4ml.records import CellRef, CellRun

    lineage, ns = Lineage(), {"a": 1, "b": 2}
    runs = []
    for run_id, cell, sha, reads, binds in [
        ("r1", "c1", "s1", set(), {"a"}),
        ("r2", "c2", "s2", {"a"}, {"b"}),
        ("r3", "c1", "s1b", set(), {"a"}),
    ]:
        links = record(lineage, run_id, cell, sha, ns, reads, binds)
        runs.append(
            CellRun(
                run_id,
                "s",
                "cell",
                CellRef(sha, "", cell, int(run_id[1:])),
                0,
                0,
                0,
                0,
                "ok",
                reads=links.reads,
                variables=links.summaries(),
                informed_by=links.informed_by,
            )
        )
    live = [(c.cell_id, c.reasons) for c in lineage.stale_cells()]
    assert live == [("c2", ("`a` was rebound by [3] after it ran",))]
    assert [(c.cell_id, c.reasons) for c in Lineage.replay(runs).stale_cells()] == live
