"""Who a cell is: the SHA-256 of its source plus what the front end sent about it.

Read on every cell, so this must stay on the light path: hashing and attribute reads only.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

# Session and run ids, as we make them and as a store may be trusted to hold them: they name
# folders and files, so no separators, no leading dot, bounded length.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_id(text: object) -> bool:
    """Whether `text` is a session or run id (`[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 128 chars)."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def source_sha256(source: str) -> str:
    """SHA-256 hex digest of a cell's source, as saved in the notebook (UTF-8)."""
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


# A version of a cell's code, as the kernel's lineage and dataflow cache know it: the source
# itself when short (a string hashes once, where SHA-256 would cost every cell's hook a
# hashlib call), its SHA-256 when long (memory must not follow the size of pasted data).
_VERSION_BY_SOURCE_CHARS = 4096


class SourceDigest(str):
    """A long source's version: its SHA-256 (a `str`, told apart from a short source)."""

    __slots__ = ()


def cell_version(source: str) -> str:
    """What identifies this version of a cell's code in the kernel (see `version_sha256`)."""
    if len(source) <= _VERSION_BY_SOURCE_CHARS:
        return source
    return SourceDigest(source_sha256(source))


def version_sha256(version: str) -> str:
    """The SHA-256 of the source whose `cell_version` is `version`."""
    return str(version) if type(version) is SourceDigest else source_sha256(version)


def front_end_cell_id(info: Any) -> str | None:
    """The cell id the front end sent (`ExecutionInfo.cell_id`), or None.

    IPython < 8.? and clients such as plain nbclient send none; newer IPython may also carry it
    only in `cell_meta`, so both are read defensively.
    """
    cell_id = getattr(info, "cell_id", None)
    if cell_id:
        return str(cell_id)
    meta = getattr(info, "cell_meta", None)
    if isinstance(meta, dict):
        meta_id = meta.get("cellId")
        if meta_id:
            return str(meta_id)
    return None


def notebook_path(user_ns: dict[str, Any]) -> str | None:
    """Path of the notebook this kernel serves, when a front end told the kernel.

    VS Code sets `__vsc_ipynb_file__`; jupyter_server and our headless runner set
    `JPY_SESSION_NAME` in the kernel's environment; ipykernel copies it to `__session__`.
    """
    for candidate in (
        user_ns.get("__vsc_ipynb_file__"),
        os.environ.get("JPY_SESSION_NAME"),
        user_ns.get("__session__"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def notebook_cells(path: str | None) -> tuple[dict[str, str], dict[str, int]] | None:
    """Current sources and positions of a notebook's cells, by cell id, read from its file.

    Used on demand (`%prov stale`, `%prov graph`), never per cell. None when the notebook is
    unknown, unreadable or has no cell ids (nbformat < 4.5).
    """
    if not path or not path.endswith(".ipynb"):
        return None
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            cells = json.load(handle).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return None
    sources: dict[str, str] = {}
    positions: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("id"), str):
            continue
        source = cell.get("source", "")
        sources[cell["id"]] = "".join(source) if isinstance(source, list) else str(source)
        positions[cell["id"]] = index
    return (sources, positions) if positions else None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
