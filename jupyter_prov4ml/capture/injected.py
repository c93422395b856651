"""Parameters injected by papermill (`papermill NB OUT -p lr 0.3`, or `jupyter-prov4ml run
NB -p lr 0.3`) become parameters of every run in that notebook session, with source
`injected`.

The kernel cannot see the injected cell's tag: papermill (through nbclient) sends no cell
metadata with its execute requests, so IPython's `ExecutionInfo.cell_meta` is empty. It can
see the cell's source, which papermill writes as a `# Parameters` comment line followed by
one `name = literal` assignment per parameter (black-formatted when black is installed). The
shell's input history holds every cell run so far, including those run before
`%load_ext`, where papermill puts the injected cell of a notebook without a `parameters`
cell. The newest such cell counts, as it does for the notebook's variables.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from jupyter_prov4ml.capture.params import make_param, param_text, scalar_or_none
from jupyter_prov4ml.records import Param

INJECTED = "injected"
_MARKER = "# Parameters"
# papermill's cell holds one short line per parameter; anything longer is a user's cell.
_MAX_SOURCE_CHARS = 100_000


def injected_params(source: str) -> tuple[Param, ...] | None:
    """The parameters of a papermill-injected cell, or None when `source` is not one: its
    first line is `# Parameters` and every statement is `name = literal`."""
    if not source.startswith(_MARKER) or len(source) > _MAX_SOURCE_CHARS:
        return None
    first, _, rest = source.partition("\n")
    if first.rstrip() != _MARKER:
        return None
    try:
        tree = ast.parse(rest)
    except (SyntaxError, ValueError):
        return None
    params: list[Param] = []
    for statement in tree.body:
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            return None
        try:
            value = ast.literal_eval(statement.value)
        # papermill writes float('nan') / float('inf') for non-finite floats: kept as text.
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = ast.unparse(statement.value)
        scalar = scalar_or_none(value)
        stored = scalar if scalar is not None or value is None else param_text(value)
        params.append(make_param(statement.targets[0].id, stored, INJECTED))
    return tuple(params)


class InjectedParameters:
    """The newest injected cell's parameters in a session, read from its input history;
    remembers how far it read, so each run reads only the cells run since the last."""

    def __init__(self) -> None:
        self.params: tuple[Param, ...] = ()
        self._read = 0

    def update(self, history: Sequence[str]) -> tuple[Param, ...]:
        """Read the cells of `history` (IPython's `input_hist_raw`) not read yet."""
        if len(history) < self._read:  # the history was reset (`%reset`)
            self._read = 0
        for source in history[self._read :]:
            if isinstance(source, str) and source.startswith(_MARKER):
                found = injected_params(source)
                if found is not None:
                    self.params = found
        self._read = len(history)
        return self.params
