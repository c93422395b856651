"""A saved `.ipynb` read as untrusted input, and written back atomically.

Reading is bounded (file size, cell count, source length) and checks the shape of what it
uses, so a hostile or broken notebook gives one clear `NotebookError`, never a traceback or
an unbounded read. Writing replaces the file in one rename, keeping its permission bits: an
editor or a crash sees the old notebook or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from jupyter_prov4ml.identity import source_sha256
from jupyter_prov4ml.lineage.clean_run import SavedCell

# Notebooks with embedded images reach tens of MB; a larger file is refused unread.
MAX_NOTEBOOK_BYTES = 256 * 2**20
MAX_CELLS = 100_000


class NotebookError(ValueError):
    """A notebook that cannot be read or written as asked; the message says why."""


def read_notebook(path: Path) -> dict[str, Any]:
    """The notebook's JSON, read within bounds; NotebookError otherwise."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise NotebookError(f"{path} is not a file")
            if info.st_size > MAX_NOTEBOOK_BYTES:
                raise NotebookError(
                    f"{path} is {info.st_size:,} bytes, more than {MAX_NOTEBOOK_BYTES:,}"
                )
            data = handle.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as error:
        raise NotebookError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        notebook = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise NotebookError(f"{path} is not a notebook (not valid JSON: {error})"[:300]) from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{path} is not a notebook (no list of cells)")
    if len(notebook["cells"]) > MAX_CELLS:
        raise NotebookError(f"{path} has more than {MAX_CELLS:,} cells")
    return notebook


def saved_cells(notebook: dict[str, Any]) -> list[SavedCell]:
    """Every cell of a notebook read by `read_notebook`, in order; NotebookError for a cell
    whose fields are not of the types nbformat gives them."""
    cells = []
    for position, cell in enumerate(notebook["cells"], start=1):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {position} is not an object")
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"cell {position}: its source is not text")
        cell_id = cell.get("id")
        count = cell.get("execution_count")
        metadata = cell.get("metadata")
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        cells.append(
            SavedCell(
                position=position,
                cell_id=cell_id if isinstance(cell_id, str) and cell_id else None,
                code=cell.get("cell_type") == "code",
                sha256=source_sha256(source),
                source=source,
                execution_count=count if type(count) is int else None,
                has_outputs=bool(cell.get("outputs")),
                tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            )
        )
    return cells


def write_notebook(path: Path, notebook: dict[str, Any]) -> None:
    """Replace `path` by `notebook` in one rename, keeping the file's mode; NotebookError
    (the old file untouched) when it cannot be written."""
    text = json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    target = path.resolve()
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise NotebookError(f"cannot write beside {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(text.encode("utf-8", "surrogatepass"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise NotebookError(f"cannot write {path}: {error.strerror or error}") from None
