"""Headless notebook execution in a real kernel, with cell ids sent as JupyterLab sends them.

Plain nbclient (and so papermill) sends no execute-request metadata, so the kernel sees
`cell_id = None` for every cell. This client sends `{"cellId": cell.id}`, which ipykernel
passes to IPython as `ExecutionInfo.cell_id`, so records carry the notebook's own cell ids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.corpus.words import generate_corpus_id

from jupyter_prov4ml.cli.parameters import inject_parameters
from jupyter_prov4ml.settings import STORE_ENV

# Executed silently after the last cell: writes whatever the extension still holds, so the
# store is complete even if the kernel is later killed instead of shut down.
_FLUSH_CODE = (
    "getattr(get_ipython(), '_jupyter_prov4ml', None) "
    "and get_ipython()._jupyter_prov4ml.writer.flush()"
)


class CellIdNotebookClient(NotebookClient):  # type: ignore[misc]
    """A NotebookClient whose execute requests carry the cell id in their metadata."""

    def __init__(self, nb: Any, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self._cell_id: str | None = None

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        self._cell_id = cell.get("id")
        last = cell_index == len(self.nb.cells) - 1
        try:
            executed = await super().async_execute_cell(cell, cell_index, *args, **kw)
        except CellExecutionError:
            await self._flush_provenance()
            raise
        finally:
            self._cell_id = None
        if last:
            await self._flush_provenance()
        return executed

    async def async_start_new_kernel_client(self) -> Any:
        client = await super().async_start_new_kernel_client()
        # jupyter_client's execute() takes no metadata; this instance's sends the cell id.
        client.execute = self._execute_with_cell_id  # type: ignore[method-assign]
        return client

    def _execute_with_cell_id(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
    ) -> str:
        client: Any = self.kc
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": client.allow_stdin if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        metadata = {"cellId": self._cell_id} if self._cell_id else {}
        msg = client.session.msg("execute_request", content, metadata=metadata)
        client.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    async def _flush_provenance(self) -> None:
        client: Any = self.kc
        if client is not None:
            await client.execute_interactive(_FLUSH_CODE, silent=True, timeout=60)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a headless run produced."""

    executed_path: Path
    error: str | None


def ensure_cell_ids(nb: Any) -> None:
    """Give every cell an nbformat ≥ 4.5 id (older notebooks have none)."""
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        nb.nbformat_minor = 5
    for cell in nb.cells:
        if not cell.get("id"):
            cell["id"] = generate_corpus_id()


def default_output(notebook: Path) -> Path:
    return notebook.with_name(f"{notebook.stem}.executed.ipynb")


def run_notebook(
    notebook: Path,
    output: Path | None = None,
    store: Path | None = None,
    kernel_name: str | None = None,
    timeout_s: int | None = None,
    allow_errors: bool = False,
    parameters: Mapping[str, Any] | None = None,
) -> RunOutcome:
    """Execute `notebook` in a fresh kernel started in its folder; save the executed copy.

    `parameters` are injected as papermill injects them (a cell tagged
    `injected-parameters`). The executed notebook is saved even when a cell fails (the error
    is returned).
    """
    notebook = notebook.resolve()
    output = (output or default_output(notebook)).resolve()
    nb = nbformat.read(notebook, as_version=4)
    if parameters:
        nb = inject_parameters(nb, parameters, kernel_name)
    ensure_cell_ids(nb)
    env = dict(os.environ)
    # What jupyter_server sets for a notebook's kernel; ipykernel exposes it as __session__.
    env["JPY_SESSION_NAME"] = str(notebook)
    if store is not None:
        env[STORE_ENV] = str(store.resolve())
    client_kwargs: dict[str, Any] = {
        "timeout": timeout_s,
        "allow_errors": allow_errors,
        "resources": {"metadata": {"path": str(notebook.parent)}},
    }
    if kernel_name:
        client_kwargs["kernel_name"] = kernel_name
    client = CellIdNotebookClient(nb, **client_kwargs)
    error: str | None = None
    try:
        client.execute(env=env)
    except CellExecutionError as failure:
        error = str(failure).strip().splitlines()[-1] if str(failure).strip() else "a cell failed"
    finally:
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output)
    return RunOutcome(output, error)
