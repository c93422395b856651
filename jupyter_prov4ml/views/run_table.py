"""Runs as rows: the JSON the CLI prints and the table `%prov list` shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_prov4ml.store.index import IndexedRun, RunQuery
from jupyter_prov4ml.store.layout import Store, StoredRun
from jupyter_prov4ml.views.escape import html_text

# The terminal table's columns (scripts read them; `--wide` adds energy and parameters).
COLUMNS = ("run_id", "kind", "name", "execution_count", "status", "started_at", "duration_s")
WIDE_COLUMNS = (*COLUMNS, "energy_j", "params")
# The notebook table's headings, one per cell that `_html_row` makes.
_HTML_HEADINGS = (
    "run",
    "name",
    "cell",
    "when (UTC)",
    "duration",
    "status",
    "energy",
    "key parameters",
)
KEY_PARAMS_SHOWN = 4
MAX_SHOWN_CHARS = 1_000
MAX_SHOWN_PARAMS = 200


def run_row(stored: StoredRun | IndexedRun) -> dict[str, Any]:
    """The stable, documented JSON shape of one run (`jupyter-prov4ml list --json`).

    Texts are str (or None) and numbers float (or None) whatever a damaged store holds, so
    that the tables below never fail on a row."""
    run = stored if isinstance(stored, IndexedRun) else IndexedRun.of(stored.run, stored.prov_path)
    count = run.execution_count
    return {
        "run_id": _shown(run.run_id),
        "session_id": _shown(run.session_id),
        "kind": _shown(run.kind),
        "name": _text(run.name),
        "cell_sha256": _shown(run.cell_sha256),
        "cell_id": _text(run.cell_id),
        "execution_count": count if type(count) is int else None,
        "notebook_path": _text(run.notebook_path),
        "status": _shown(run.status),
        "error_type": _text(run.error_type),
        "started_at": _shown(run.started_at),
        "duration_s": _rounded(run.duration_s),
        "cpu_time_s": _rounded(run.cpu_time_s),
        "energy_j": _rounded(run.energy_j),
        "params": _shown_params(dict(run.params)),
        "prov_path": str(run.prov_path) if run.prov_path else None,
    }


def _text(value: Any) -> str | None:
    return None if value is None else _shown(value)


def _shown(value: Any) -> str:
    """A text from the store as a listing shows it: a store is untrusted, and a 100 MB run name
    must not become 100 MB of output (`show` and `list` cut at MAX_SHOWN_CHARS)."""
    text = str(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def _shown_params(params: dict[str, Any]) -> dict[str, Any]:
    shown = list(params.items())[:MAX_SHOWN_PARAMS]
    return {_shown(k): _shown(v) if isinstance(v, str) else v for k, v in shown}


def _rounded(value: Any) -> float | None:
    """A number rounded to the microsecond (or µJ); None for what is not one."""
    try:
        return round(float(value), 6)
    except (TypeError, ValueError, OverflowError):
        return None


def _fixed(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def format_energy(energy_j: float | None) -> str:
    """`12.3 J`, `4.56 kJ`, `7.89 MJ`; empty when nothing was measured."""
    if energy_j is None:
        return ""
    for factor, unit in ((1e6, "MJ"), (1e3, "kJ")):
        if abs(energy_j) >= factor:
            return f"{energy_j / factor:.3g} {unit}"
    return f"{energy_j:.3g} J"


def key_params(params: dict[str, Any], limit: int = KEY_PARAMS_SHOWN) -> str:
    """The first few parameters as `name=value`, each value kept short."""
    shown = [f"{name}={_short(repr(value), 24)}" for name, value in list(params.items())[:limit]]
    if len(params) > limit:
        shown.append(f"+{len(params) - limit} more")
    return ", ".join(shown)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class RunTable:
    """A list of runs, as HTML in a notebook and as aligned text elsewhere.

    `total` is how many runs matched when `rows` holds only the newest of them; `wide` adds
    energy and parameters to the text form (the HTML form always has them).
    """

    rows: Sequence[dict[str, Any]]
    total: int | None = None
    wide: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return WIDE_COLUMNS if self.wide else COLUMNS

    def _cells(self, row: dict[str, Any]) -> list[str]:
        """The text cells of `columns`, written out: a listing formats 10,000 rows."""
        name, count = row["name"], row["execution_count"]
        cells = [
            row["run_id"],
            row["kind"],
            "" if name is None else str(name),
            "" if count is None else str(count),
            row["status"],
            str(row["started_at"])[:19].replace("T", " "),
            _fixed(row["duration_s"]),
        ]
        if self.wide:
            cells.append(_fixed(row["energy_j"]))
            cells.append(key_params(row["params"]) if row["params"] else "")
        return cells

    def _footer(self) -> str | None:
        if self.total is None or self.total <= len(self.rows):
            return None
        return (
            f"the newest {len(self.rows)} of {self.total} runs; "
            "--last N or --all shows more (jupyter-prov4ml list shows all)"
        )

    def __repr__(self) -> str:
        if not self.rows:
            return "no runs recorded yet"
        cells = self._cells
        table = [list(self.columns)] + [cells(row) for row in self.rows]
        widths = [max(map(len, column)) for column in zip(*table, strict=True)]
        line_format = "  ".join(f"{{:<{width}}}" for width in widths)
        lines = [line_format.format(*line).rstrip() for line in table]
        footer = self._footer()
        return "\n".join(lines + ([footer] if footer else []))

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>no runs recorded yet</p>"
        head = "".join(f"<th>{html_text(c)}</th>" for c in _HTML_HEADINGS)
        body = "".join(_html_row(row) for row in self.rows)
        footer = self._footer()
        caption = f"<caption>{html_text(footer)}</caption>" if footer else ""
        return f"<table class='jp-prov4ml-runs'>{caption}<tr>{head}</tr>{body}</table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _html_row(row: dict[str, Any]) -> str:
    escape = html_text
    count = row["execution_count"]
    cell = f"[{'' if count is None else count}]"
    if row["cell_id"]:
        cell += f" {_short(str(row['cell_id']), 12)}"
    status = str(row["status"])
    if row["error_type"]:
        status += f" ({row['error_type']})"
    colour = "" if row["status"] == "ok" else " style='color:#b00'"
    params = row["params"]
    cells = [
        f"<td title='{escape(row['session_id'])}'><code>{escape(row['run_id'])}</code></td>",
        f"<td>{escape(row['name'] or '')}</td>",
        f"<td title='{escape(str(row['cell_sha256']))}'>{escape(cell)}</td>",
        f"<td>{escape(str(row['started_at'])[:19].replace('T', ' '))}</td>",
        f"<td style='text-align:right'>{_fixed(row['duration_s'])} s</td>",
        f"<td{colour}>{escape(status)}</td>",
        f"<td style='text-align:right'>{escape(format_energy(row['energy_j']))}</td>",
        f"<td title='{escape(repr(params))}'>{escape(key_params(params))}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def run_table(
    store: Store, query: RunQuery, newest: int | None = None, wide: bool = False
) -> RunTable:
    """The table of the runs `query` selects; only the `newest` of them unless the query
    says how many (`last`)."""
    if query.last is None and newest is not None:
        query = dataclasses.replace(query, last=newest)
    runs, total = store.listing(query)
    return RunTable([run_row(run) for run in runs], total=total, wide=wide)
