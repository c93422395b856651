"""Lineage between cell executions: which execution last bound each name a cell reads
(`wasInformedBy`), new versions of a cell (`wasDerivedFrom`), and which cells' outputs are
stale or were computed out of order.

Runs in the cell hook, so it keeps only what staleness needs (bounded by the number of cells
and names, not by the session's length) and inspects values without running user code: types
are recognised by module and name, never through `getattr` on the user's object.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from jupyter_prov4ml.identity import source_sha256
from jupyter_prov4ml.records import CellRun, VariableSummary
from jupyter_prov4ml.redaction import REDACTED, is_secret_name, looks_like_credential, redact_text

# Values up to this many bytes are hashed; larger ones are described, not hashed.
MAX_HASHED_BYTES = 100_000
MAX_SUMMARY_CHARS = 80
# Strings up to this long are checked for a credential's shape (longer ones: by name only).
_SHAPE_CHECKED_CHARS = 4_096
_SCALARS = (int, float, bool, complex)

_CONTAINERS = (list, tuple, dict, set, frozenset)


# A variable a cell bound, as `VariableSummary`'s fields: name, type, description, hash. Made
# on every cell that binds a name, so a plain tuple (a frozen dataclass costs ~3x more).
VariableFacts = tuple[str, str, str, "str | None"]


def summarize(name: str, value: Any) -> VariableSummary:
    """Name, type, a short description and, where cheap, a hash of the value."""
    return VariableSummary(*variable_facts(name, value))


def variable_facts(name: str, value: Any) -> VariableFacts:
    """`summarize`'s fields as a tuple: what the cell hook keeps."""
    kind: Any = type(value)
    type_name = _type_name(kind)
    digest: str | None = None
    if is_secret_name(name) or ((kind is str or kind is bytes) and _holds_credential(kind, value)):
        # No description and no hash: a short password's sha256 can be looked up.
        description = REDACTED
    elif kind in _SCALARS:
        # The description is the value itself: a hash would add nothing.
        description = repr(value)[:MAX_SUMMARY_CHARS]
    elif kind is str:
        description = f"{len(value)} characters"
        if len(value) <= MAX_HASHED_BYTES:
            digest = _sha(value.encode("utf-8", "surrogatepass"))
    elif kind is bytes:
        description = f"{len(value)} bytes"
        if len(value) <= MAX_HASHED_BYTES:
            digest = _sha(value)
    elif kind in _CONTAINERS:
        description = f"{len(value)} items"
    else:
        description, digest = _described(kind, value)
    return name, type_name, description, digest


def _described(kind: Any, value: Any) -> tuple[str, str | None]:
    """An array's, a frame's, a tensor's or a function's description (and hash, for a small
    array); "" for any other object, which is never asked anything."""
    module = kind.__module__
    if module == "numpy" and kind.__name__ == "ndarray":
        digest = _sha(value.tobytes()) if value.nbytes <= MAX_HASHED_BYTES else None
        return f"shape {value.shape} {value.dtype}", digest
    if module.startswith("pandas.") and kind.__name__ in ("DataFrame", "Series"):
        return f"shape {value.shape}", None
    if module.startswith("torch") and kind.__name__ in ("Tensor", "Parameter"):
        return f"shape {tuple(value.shape)} {value.dtype}", None
    if kind.__name__ in ("module", "function", "type", "builtin_function_or_method"):
        return str(getattr(value, "__name__", ""))[:MAX_SUMMARY_CHARS], None
    return "", None


# A type's `__qualname__` is made anew on every read, and a notebook binds values of a few
# dozen types (bounded: a notebook may define classes again and again).
def _name_of_type(kind: Any) -> str:
    module = kind.__module__
    return str(kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}")


_type_name = functools.lru_cache(maxsize=512)(_name_of_type)


def _holds_credential(kind: type, value: Any) -> bool:
    """Whether a string (or bytes) is, or holds, what redaction would hide: shaped like a
    credential (`Bearer …`), or text with one in it (`"mysql -pSECRET"`, `"password: …"`).
    Its hash would be as good as the value to whoever can guess it."""
    if kind is bytes and len(value) <= _SHAPE_CHECKED_CHARS:
        value, kind = value.decode("latin-1"), str
    if kind is not str or len(value) > _SHAPE_CHECKED_CHARS:
        return False
    return looks_like_credential(value) or redact_text(value) != value


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A name an execution bound, read as the execution left it: (name, id of the value, the value
# itself when immutable and small, else None, the value's facts when not, else None). An
# immutable value is described when the lineage is recorded, in a batch off the cell's path
# (`capture.recorder`); any other is described at once, before a later cell can change it,
# and not kept.
BoundValue = tuple[str, int, Any, "VariableFacts | None"]

# Immutable values described later: small enough that keeping them briefly costs nothing.
_DESCRIBED_LATER = frozenset((int, float, bool, complex, type(None)))
_TEXTS = frozenset((str, bytes))


def bound_values(binds: frozenset[str], namespace: Mapping[str, Any]) -> tuple[BoundValue, ...]:
    """What lineage keeps of each name in `binds` that `namespace` holds, sorted by name."""
    out: list[BoundValue] = []
    for name in sorted(binds) if len(binds) > 1 else binds:
        value = namespace.get(name, _UNBOUND)
        if value is _UNBOUND:
            continue
        kind = type(value)
        if kind in _DESCRIBED_LATER or (kind in _TEXTS and len(value) <= MAX_HASHED_BYTES):
            out.append((name, id(value), value, None))
        else:
            out.append((name, id(value), None, _facts_or_type(name, value)))
    return tuple(out)


def _facts_or_type(name: str, value: Any) -> VariableFacts:
    try:
        return variable_facts(name, value)
    except Exception:  # noqa: BLE001 - describing a value is best effort
        return (name, type(value).__name__, "", None)


class Links(NamedTuple):
    """What one execution's lineage adds to its record (a tuple: built on every cell)."""

    reads: tuple[str, ...]
    variables: tuple[VariableFacts, ...]
    informed_by: tuple[tuple[str, tuple[str, ...]], ...]
    derived_from_sha256: str | None

    def summaries(self) -> tuple[VariableSummary, ...]:
        """`variables` as a record holds them."""
        return tuple(VariableSummary(*facts) for facts in self.variables)


def _same(version: str) -> str:
    return version


_UNBOUND: Any = object()  # what the namespace gives for a name it does not hold

# Most cells read nothing a recorded cell bound: they share this (never changed) mapping.
_NO_READS: Mapping[str, str] = MappingProxyType({})


class _CellState(NamedTuple):
    """The latest execution of one cell (by front-end id, else by version); a tuple, one
    made on every cell."""

    run_id: str
    cell_id: str | None
    # What identifies this version of the cell's code: `identity.cell_version` in the kernel
    # (hashed only when a record or a view needs the hash), its SHA-256 when replayed.
    version: str
    execution_count: int | None
    # name read → the execution that had bound it when this cell read it
    read_from: Mapping[str, str] = _NO_READS


@dataclass(frozen=True, slots=True)
class StaleCell:
    """A cell whose last output may no longer hold, and why."""

    cell_id: str | None
    sha256: str
    run_id: str
    execution_count: int | None
    reasons: tuple[str, ...]


class Lineage:
    """The session's bindings and the last execution of each cell (one thread at a time: the
    kernel's recorder records in batches under its lock, on the main or the writer thread).

    `digest` turns a cell version (what `record` is given) into its SHA-256: the kernel
    passes `identity.cell_version`s and `version_sha256`, so a cell's hook never hashes a
    short source; replayed records pass hashes, kept as they are."""

    def __init__(self, digest: Callable[[str], str] = _same) -> None:
        self.last_binder: dict[str, str] = {}
        # run id → (cell key, version, execution count) of executions that bound names
        self._binders: dict[str, tuple[str, str, int | None]] = {}
        self._bound_ids: dict[str, int] = {}
        self.cells: dict[str, _CellState] = {}
        self._digest = digest

    def record(
        self,
        run_id: str,
        cell_id: str | None,
        version: str,
        execution_count: int | None,
        reads: frozenset[str],
        bound: Iterable[BoundValue],
        deletes: frozenset[str],
        succeeded: bool,
    ) -> Links:
        """Record one execution, in the order executions ran: `bound` is what
        `bound_values` read of the names it bound as it ended."""
        # On every cell: the common case (nothing read, one name bound) takes the short way.
        key = cell_id or version
        previous = self.cells.get(key)
        derived = (
            self._digest(previous.version)
            if previous is not None and previous.version != version
            else None
        )
        read_from: Mapping[str, str] = _NO_READS
        informed_by: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if reads:
            last_binder = self.last_binder
            found = {name: last_binder[name] for name in reads if name in last_binder}
            if found:
                read_from = found
                informed: dict[str, list[str]] = {}
                for name, binder in sorted(found.items()):
                    if binder != run_id:
                        informed.setdefault(binder, []).append(name)
                informed_by = tuple((binder, tuple(names)) for binder, names in informed.items())
        variables: list[VariableFacts] = []
        for name, value_id, value, facts in bound:
            # A failed cell bound only what it reached before failing: trust the static
            # bindings only where the object actually changed.
            if not succeeded and self._bound_ids.get(name) == value_id:
                continue
            self.last_binder[name] = run_id
            self._bound_ids[name] = value_id
            variables.append(facts if facts is not None else _facts_or_type(name, value))
        for name in deletes:
            self.last_binder.pop(name, None)
            self._bound_ids.pop(name, None)
        # Tuples made directly (their generated `__new__` is one more call on every cell).
        self.cells[key] = tuple.__new__(
            _CellState, (run_id, cell_id, version, execution_count, read_from)
        )
        if variables:
            self._binders[run_id] = (key, version, execution_count)
            if len(self._binders) > 2 * (len(self.last_binder) + len(self.cells)) + 64:
                self._prune()
        return tuple.__new__(
            Links,
            (tuple(sorted(read_from)) if read_from else (), tuple(variables), informed_by, derived),
        )

    @classmethod
    def replay(cls, runs: Iterable[CellRun]) -> Lineage:
        """The lineage state a session's recorded runs imply, rebuilt without its kernel
        (for the command line, or a store copied from another machine)."""
        lineage = cls()
        for run in runs:
            key = run.cell.cell_id or run.cell.sha256
            read_from = {name: binder for binder, names in run.informed_by for name in names}
            # Names read from the execution itself (bound earlier in the same cell) are not
            # in informed_by; they were read before this run rebound them.
            for name in run.reads:
                read_from.setdefault(name, lineage.last_binder.get(name, run.run_id))
            for variable in run.variables:
                lineage.last_binder[variable.name] = run.run_id
            if run.variables:
                lineage._binders[run.run_id] = (key, run.cell.sha256, run.cell.execution_count)
            lineage.cells[key] = _CellState(
                run.run_id, run.cell.cell_id, run.cell.sha256, run.cell.execution_count, read_from
            )
        return lineage

    def stale_cells(
        self,
        notebook_sources: Mapping[str, str] | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> list[StaleCell]:
        """Cells whose last output may be stale: an input was rebound since, an input came
        from an old version of its cell, the cell's own source changed (when the notebook's
        current sources are known), or it read a name bound by a cell below it."""
        found = []
        for cell in self.cells.values():
            reasons = []
            for name, binder in sorted(cell.read_from.items()):
                now = self.last_binder.get(name)
                if now is None:
                    reasons.append(f"`{name}` was deleted after it ran")
                elif now != binder:
                    reasons.append(f"`{name}` was rebound by {self._describe(now)} after it ran")
                elif self._superseded(binder):
                    reasons.append(f"`{name}` comes from an old version of its cell")
            cell_id = cell.cell_id
            if notebook_sources is not None and cell_id is not None and cell_id in notebook_sources:
                current = notebook_sources[cell_id]
                if source_sha256(current) != self._digest(cell.version):
                    reasons.append("its source changed after it ran")
            if positions is not None and cell_id is not None and cell_id in positions:
                here = positions[cell_id]
                for name, binder in sorted(cell.read_from.items()):
                    origin = self._binders.get(binder)
                    if origin is not None and positions.get(origin[0], -1) > here:
                        reasons.append(f"out of order: `{name}` comes from a cell below it")
            if reasons:
                found.append(
                    StaleCell(
                        cell.cell_id,
                        self._digest(cell.version),
                        cell.run_id,
                        cell.execution_count,
                        tuple(reasons),
                    )
                )
        return found

    def stale_inputs(self, reads: tuple[str, ...]) -> list[str]:
        """The names among `reads` whose binding comes from a stale or superseded execution."""
        stale_runs = {cell.run_id for cell in self.stale_cells()}
        return [
            name
            for name in reads
            if (binder := self.last_binder.get(name)) is not None
            and (binder in stale_runs or self._superseded(binder))
        ]

    def _superseded(self, binder: str) -> bool:
        """True when the cell that ran `binder` has since run a different version of its code."""
        known = self._binders.get(binder)
        if known is None:
            return False
        key, version, _ = known
        latest = self.cells.get(key)
        return latest is not None and latest.version != version

    def _describe(self, run_id: str) -> str:
        known = self._binders.get(run_id)
        if known is not None and known[2] is not None:
            return f"[{known[2]}]"
        return run_id.rsplit("-", 1)[-1]

    def _prune(self) -> None:
        """Forget binders nothing refers to any more: memory follows cells and names, not
        the number of executions."""
        live = set(self.last_binder.values())
        for cell in self.cells.values():
            live.update(cell.read_from.values())
        self._binders = {run: facts for run, facts in self._binders.items() if run in live}
