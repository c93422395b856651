"""`jupyter-prov4ml run -p NAME VALUE`: values typed exactly as papermill's `-p` types them,
and the injected cell made the same way with papermill or without it."""

from __future__ import annotations

import sys

import nbformat
import pytest

from jupyter_prov4ml.capture.injected import injected_params
from jupyter_prov4ml.cli.parameters import inject_parameters, parameters_of, typed_value
from jupyter_prov4ml.records import Param


def test_values_are_typed_like_papermills_command_line() -> None:
    """True/False/None, ints, floats (also `1e-3`, `nan`), else text: as papermill's CLI."""
    cli = pytest.importorskip("papermill.cli")
    for text in ("True", "False", "None", "3", "-2", "0.3", "1e-3", "nan", "fast", "1_000", ""):
        expected = cli._resolve_type(text)
        got = typed_value(text)
        assert type(got) is type(expected) and (got == expected or got != got), text
    assert parameters_of([("lr", "0.1"), ("lr", "0.3")]) == {"lr": 0.3}


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("lr = 0.1\n")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_prov4ml"), parameters]
    nb.cells.append(nbformat.v4.new_code_cell("x = lr"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nb


@pytest.mark.parametrize("papermill", ["installed", "missing"])
def test_the_injected_cell_follows_the_parameters_cell(
    papermill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With papermill's parameterize_notebook or the fallback: one cell tagged
    `injected-parameters` right after the `parameters` cell, which the kernel reads back as
    injected parameters; the other cells' metadata is left as it was."""
    if papermill == "installed":
        pytest.importorskip("papermill.parameterize")
    else:
        monkeypatch.setitem(sys.modules, "papermill.parameterize", None)  # import fails
    nb = inject_parameters(_notebook(), {"lr": 0.3, "name": "fast"}, None)
    tags = [cell.metadata.get("tags") for cell in nb.cells]
    assert tags == [None, ["parameters"], ["injected-parameters"], None]
    assert injected_params(nb.cells[2].source) == (
        Param("lr", 0.3, "injected"),
        Param("name", "fast", "injected"),
    )
    again = inject_parameters(nb, {"lr": 0.5}, None)
    assert [c.metadata.get("tags") for c in again.cells].count(["injected-parameters"]) == 1
