"""Parameters of a run: `--param NAME=VALUE` from the magic line, and literal top-level
assignments in the cell body (`batch_size = 64`), read with `ast.literal_eval`, never `eval`."""

from __future__ import annotations

import ast
import math
import re
import warnings

from jupyter_prov4ml.notation import utf8_safe
from jupyter_prov4ml.records import Param, ParamValue
from jupyter_prov4ml.redaction import redact_value

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_MAX_SOURCE_CHARS = 100_000  # as dataflow.MAX_SOURCE_CHARS: past it, a cell is data
MAX_STRING_CHARS = 1_000
# About 1,000 decimal digits, like MAX_STRING_CHARS (past 4,300 Python refuses to print one).
_MAX_INT_BITS = 3_300


def make_param(name: str, value: ParamValue, source: str) -> Param:
    """A Param, with the value redacted when it or its name looks like a credential."""
    return Param(name, redact_value(name, value), source)  # type: ignore[arg-type]


class ParamError(ValueError):
    """A `--param` the user wrote that cannot be understood."""


def parse_param_option(text: str) -> Param:
    """`lr=0.01` → Param('lr', 0.01). Values are Python literals where they parse, else strings."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep:
        raise ParamError(f"--param expects NAME=VALUE, got {text!r}")
    if not _NAME.match(name):
        raise ParamError(f"--param name {name!r} is not an identifier")
    return make_param(name, literal_or_text(raw.strip()), "magic")


def literal_or_text(raw: str) -> ParamValue:
    """A scalar Python literal if `raw` is one, else the text itself."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw
    return scalar_or_none(value) if scalar_or_none(value) is not None or value is None else raw


def scalar_or_none(value: object) -> ParamValue:
    """`value` if it is a JSON-friendly scalar, else None (containers are summarised as text).

    Strings longer than MAX_STRING_CHARS are not parameters (a 1 MB literal is data), nor
    are integers of more than about as many digits. Subclasses of str, int and float give the
    plain value they hold: their own methods may raise, or print something else."""
    if isinstance(value, str):
        text = str.__str__(value)
        return text if len(text) <= MAX_STRING_CHARS else None
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        number = int.__int__(value)
        return number if number.bit_length() <= _MAX_INT_BITS else None
    if isinstance(value, float):
        real = float.__float__(value)
        return real if math.isfinite(real) else repr(real)
    if isinstance(value, list | tuple | dict | set | frozenset) and len(repr(value)) <= 200:
        return repr(value)
    return None


def literal_assignments(source: str) -> list[Param]:
    """Top-level `name = <literal>` assignments of a cell body, in order, last one winning.

    Anything that does not parse (IPython syntax, a syntax error, a huge cell) yields nothing.
    """
    if len(source) > _MAX_SOURCE_CHARS:
        return []
    try:
        # The cell itself warns about its own invalid escapes when it runs; parsing it again
        # here must not repeat those warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except UnicodeEncodeError:
        # Lone surrogates (text decoded with surrogateescape) cannot reach the parser: written
        # as `\udcff` escapes they can, and a string literal holding one keeps its value.
        return literal_assignments(utf8_safe(source))
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    found: dict[str, Param] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.Assign):
            targets, value_node = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value_node = [node.target], node.value
        else:
            continue
        try:
            value = ast.literal_eval(value_node)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        for target in targets:
            for name, item in _bound_literals(target, value):
                scalar = scalar_or_none(item)
                if scalar is None and item is not None:
                    continue
                found.pop(name, None)
                found[name] = make_param(name, scalar, "literal")
    return list(found.values())


def _bound_literals(target: ast.expr, value: object) -> list[tuple[str, object]]:
    """(name, value) pairs bound by `target = value`: `x = 1`, and `a, b = 1, 2` item-wise."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    if (
        isinstance(target, ast.Tuple | ast.List)
        and isinstance(value, tuple | list)
        and len(target.elts) == len(value)
        and all(isinstance(element, ast.Name) for element in target.elts)
    ):
        return [(element.id, item) for element, item in zip(target.elts, value, strict=True)]  # type: ignore[attr-defined]
    return []


def merge_params(*groups: list[Param]) -> tuple[Param, ...]:
    """Later groups override earlier ones by name; order of first appearance is kept."""
    merged: dict[str, Param] = {}
    for group in groups:
        for param in group:
            merged[param.name] = param
    return tuple(merged.values())
