"""The clean-run check on records built by hand: the cases a kernel test would need many
kernels to produce (a cell run twice, an expected failure, outputs from another session)."""

from __future__ import annotations

from jupyter_prov4ml.identity import source_sha256
from jupyter_prov4ml.lineage.clean_run import SavedCell, check_clean_run
from jupyter_prov4ml.records import CellRef, CellRun

SESSION = "20260101T000000-abcdef"


def saved(position: int, cell_id: str, source: str, count: int | None, *tags: str) -> SavedCell:
    return SavedCell(position, cell_id, True, source_sha256(source), source, count, True, tags)


def execution(
    number: int,
    cell_id: str,
    source: str,
    count: int,
    informed_by: tuple[tuple[str, tuple[str, ...]], ...] = (),
    status: str = "ok",
) -> CellRun:
    ref = CellRef(source_sha256(source), source, cell_id, count)
    return CellRun(
        f"{SESSION}-{number:05d}", SESSION, "cell", ref, float(number), float(number), 0.0, 0.0,
        status, "ZeroDivisionError" if status != "ok" else None,  # type: ignore[arg-type]
        informed_by=informed_by,
    )  # fmt: skip


def test_clean() -> None:
    """Every output from this session, in order, from its current source: clean."""
    cells = [saved(1, "a", "x = 1", 1), saved(2, "b", "y = x", 2)]
    runs = [
        execution(1, "a", "x = 1", 1),
        execution(2, "b", "y = x", 2, ((f"{SESSION}-00001", ("x",)),)),
    ]
    report = check_clean_run("n.ipynb", cells, SESSION, runs)
    assert report.clean and report.checked == 2


def test_a_cell_run_twice_reads_from_itself() -> None:
    """`x = x + 1` run twice: its output is not the result of one run."""
    cells = [saved(1, "a", "x = 0", 1), saved(2, "b", "x = x + 1", 3)]
    runs = [
        execution(1, "a", "x = 0", 1),
        execution(2, "b", "x = x + 1", 2, ((f"{SESSION}-00001", ("x",)),)),
        execution(3, "b", "x = x + 1", 3, ((f"{SESSION}-00002", ("x",)),)),
    ]
    report = check_clean_run("n.ipynb", cells, SESSION, runs)
    assert [p.position for p in report.problems] == [2]
    assert "ran more than once" in report.problems[0].reasons[0]


def test_an_expected_failure_is_allowed_only_when_tagged() -> None:
    """A failing cell fails the check unless tagged `raises-exception`."""
    runs = [execution(1, "a", "1/0", 1, status="failed")]
    assert not check_clean_run("n", [saved(1, "a", "1/0", 1)], SESSION, runs).clean
    assert check_clean_run("n", [saved(1, "a", "1/0", 1, "raises-exception")], SESSION, runs).clean


def test_an_output_from_another_session_and_an_unrun_cell() -> None:
    """An output recorded only by another kernel session, and a cell never run, are named."""
    cells = [saved(1, "a", "x = 1", 1), saved(2, "b", "y = 2", 7), saved(3, "c", "z = 3", None)]
    report = check_clean_run(
        "n", cells, SESSION, [execution(1, "a", "x = 1", 1)], {("b", 7): "other-session"}
    )
    assert [p.position for p in report.problems] == [2, 3]
    assert "another kernel session (other-session)" in report.problems[0].reasons[0]
    assert "not run" in report.problems[1].reasons[0]
    assert "cell 2 (id 'b')" in repr(report)


def test_cells_up_to_the_load_cell_are_not_checked() -> None:
    """The cell that loads the extension (and those above it) ran before recording began."""
    cells = [saved(1, "s", "import os", 1), saved(2, "l", "%load_ext jupyter_prov4ml", 2)]
    cells.append(saved(3, "a", "x = 1", 3))
    report = check_clean_run("n", cells, SESSION, [execution(1, "a", "x = 1", 3)])
    assert report.clean and report.not_checked == (1, 2) and report.checked == 1
