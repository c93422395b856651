"""`jupyter-prov4ml run NB -p NAME VALUE`: parameters injected the way papermill injects them.

A value is typed as papermill's `-p` types it (`True`/`False`/`None`, an int, a float, else
the text). With papermill installed, its own `parameterize_notebook` writes the cell (after
the cell tagged `parameters`, replacing an earlier injected one); without it, an equivalent
cell is made here: tagged `injected-parameters`, `# Parameters` then one assignment a line.
The kernel reads that cell back as the runs' `injected` parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import nbformat

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def typed_value(text: str) -> Any:
    """`text` typed as papermill's command line types a `-p` value."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parameters_of(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs as a mapping of typed values (a later NAME wins)."""
    return {name: typed_value(value) for name, value in pairs}


def inject_parameters(nb: Any, parameters: Mapping[str, Any], kernel_name: str | None) -> Any:
    """`nb` with an injected-parameters cell holding `parameters`."""
    try:
        from papermill.parameterize import parameterize_notebook
    except ImportError:
        return _inject_plainly(nb, parameters)
    metadata = nb.setdefault("metadata", nbformat.NotebookNode())
    if "papermill" not in metadata:
        metadata["papermill"] = nbformat.NotebookNode()
    kernel = kernel_name or metadata.get("kernelspec", {}).get("name") or "python3"
    language = metadata.get("kernelspec", {}).get("language") or "python"
    # papermill reads `cell.metadata.tags` of every cell (its loader adds empty ones first).
    untagged = [cell for cell in nb.cells if "tags" not in cell.metadata]
    for cell in untagged:
        cell.metadata["tags"] = []
    try:
        return parameterize_notebook(nb, dict(parameters), kernel_name=kernel, language=language)
    finally:
        for cell in untagged:
            if not cell.metadata.get("tags"):
                cell.metadata.pop("tags", None)


def _inject_plainly(nb: Any, parameters: Mapping[str, Any]) -> Any:
    source = "# Parameters\n" + "".join(
        f"{name} = {value!r}\n" for name, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source=source)
    cell.metadata["tags"] = [INJECTED_TAG]
    cells = list(nb.cells)
    tagged = [
        i for i, c in enumerate(cells) if INJECTED_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if tagged:
        cells[tagged[0]] = cell
    else:
        marked = [
            i
            for i, c in enumerate(cells)
            if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])
        ]
        cells.insert(marked[0] + 1 if marked else 0, cell)
    nb.cells = cells
    return nb
