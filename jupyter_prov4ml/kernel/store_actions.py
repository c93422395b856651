"""What `%prov verify | annotate | tag | note` do, for the magics to delegate to: each takes
the extension and the magic's words, and raises UsageError for what the user must change."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from jupyter_prov4ml.kernel.extension import ProvExtension
    from jupyter_prov4ml.lineage.clean_run import CleanRunReport


def _open_notebook(ext: ProvExtension) -> Path:
    path = ext.notebook_path
    if not path or not path.endswith(".ipynb"):
        raise UsageError(
            "the open notebook's path is unknown to this kernel (JupyterLab, Notebook 7, VS Code "
            "and `jupyter-prov4ml run` tell it); use `jupyter-prov4ml verify NOTEBOOK` instead"
        )
    return Path(path)


def verify_open_notebook(ext: ProvExtension) -> CleanRunReport:
    """The clean-run check of the open notebook as last saved."""
    from jupyter_prov4ml.store.notebook_file import NotebookError
    from jupyter_prov4ml.store.notebook_runs import verify_notebook

    path = _open_notebook(ext)
    try:
        return verify_notebook(ext.store_for_reading(), path)
    except NotebookError as error:
        raise UsageError(str(error)) from None


def annotate_open_notebook(ext: ProvExtension) -> str:
    """Write each cell's figures into the saved notebook's metadata (atomically)."""
    from jupyter_prov4ml.store.notebook_file import NotebookError
    from jupyter_prov4ml.store.notebook_runs import annotate_notebook

    path = _open_notebook(ext)
    try:
        count = annotate_notebook(ext.store_for_reading(), path)
    except NotebookError as error:
        raise UsageError(str(error)) from None
    return (
        f"jupyter_prov4ml: wrote the figures of {count} cell(s) into {path}; reload it from "
        "disk (File > Reload Notebook from Disk) before saving, or the editor's copy wins"
    )


def tag_run(ext: ProvExtension, words: list[str], remove: bool = False) -> str:
    from jupyter_prov4ml.store.annotations import AnnotationError, append_annotations, tag_line

    if len(words) < 2:
        raise UsageError("usage: %prov tag RUN NAME [NAME ...]")
    store = ext.store_for_reading()
    run_id = _run_id(ext, words[0])
    try:
        append_annotations(store.root, [tag_line(run_id, words[1:], remove)], store.modes)
    except (AnnotationError, OSError) as error:
        raise UsageError(str(error)) from None
    tags = store.annotations().tags_of(run_id)
    return f"{run_id}: {', '.join(tags) if tags else '(no tags)'}"


def note_run(ext: ProvExtension, words: list[str]) -> str:
    from jupyter_prov4ml.store.annotations import AnnotationError, append_annotations, note_line

    if len(words) < 2:
        raise UsageError('usage: %prov note RUN "text"')
    store = ext.store_for_reading()
    run_id = _run_id(ext, words[0])
    try:
        append_annotations(store.root, [note_line(run_id, _unquoted(words[1:]))], store.modes)
    except (AnnotationError, OSError) as error:
        raise UsageError(str(error)) from None
    return f"{run_id}: note added"


def _run_id(ext: ProvExtension, ref: str) -> str:
    try:
        return ext.store_for_reading().find(ref).run.run_id
    except LookupError as error:
        raise UsageError(str(error)) from None


def _unquoted(words: list[str]) -> str:
    """The note's words; IPython's argument splitting keeps the quotes around `"a b"`."""
    text = " ".join(words)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
