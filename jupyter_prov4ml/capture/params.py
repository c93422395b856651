"""Parameters of a run: `--param NAME=VALUE` from the magic line, `log_param` values, and
literal top-level assignments in the cell body (`batch_size = 64`), read with
`ast.literal_eval`, never `eval`.

A literal assignment is a parameter (what a user would call a hyperparameter) when it is a
top-level `name = <literal>` (or `name: type = <literal>`, or `a, b = 1, 2`) of a number,
string, bool or None, or a non-empty tuple, list, dict or set of them, and the cell does not
use the name as working state: no `name += …`, no `name = name …`, no rebinding inside a
loop, `if`, `with` or `try` (or as a `for` target, or in a function that declares it
`global`), no `del name`, no item or attribute assignment (`name[k] = …`), and no call of a
method that changes it (`name.append(…)`, `.update(…)` …). Empty containers (`mine = []`,
`{}`) are initialisers, never parameters. A later top-level `name = compute()` keeps the
literal (it was the value the cell started from).

No text stored for a parameter holds a memory address: `<object object at 0x7f…>` is kept
as `<object object>` (an address differs on every run and says nothing about the value).
"""

from __future__ import annotations

import ast
import math
import re
import warnings

from jupyter_prov4ml.notation import utf8_safe
from jupyter_prov4ml.records import Param, ParamValue
from jupyter_prov4ml.redaction import redact_nested, redact_value

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_MAX_SOURCE_CHARS = 100_000  # as dataflow.MAX_SOURCE_CHARS: past it, a cell is data
MAX_STRING_CHARS = 1_000
# About 1,000 decimal digits, like MAX_STRING_CHARS (past 4,300 Python refuses to print one).
_MAX_INT_BITS = 3_300
MAX_TEXT_CHARS = 200  # a container's or an object's text, as a parameter
# CPython's default repr of objects, functions, methods, generators: `<… at 0x7f3a…>`.
_ADDRESS = re.compile(r"\s+at\s+0x[0-9A-Fa-f]+(?=>)")
# Methods that change a list, dict or set in place: a name they are called on is working
# state, not a parameter.
_MUTATORS = frozenset(
    {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault"}
    | {"add", "discard", "sort", "reverse", "difference_update", "intersection_update"}
    | {"symmetric_difference_update", "__setitem__", "__delitem__", "__iadd__", "__imul__"}
)


def make_param(name: str, value: ParamValue, source: str) -> Param:
    """A Param, with the value redacted when it or its name looks like a credential (a text
    that holds one keeps the rest), and no memory address in its text."""
    if isinstance(value, str):
        value = without_addresses(value)
    return Param(name, redact_value(name, value), source)  # type: ignore[arg-type]


def without_addresses(text: str) -> str:
    """`text` with the memory addresses of default reprs removed: `<object object>`."""
    return _ADDRESS.sub("", text) if "0x" in text else text


def param_text(value: object) -> ParamValue:
    """What `log_param(name, value)` stores for any value: a JSON-friendly scalar as it is,
    a short container as its text (credentials inside redacted), any other object as its
    repr without memory addresses, or as `<TypeName>` when that text is long or fails."""
    try:
        scalar = scalar_or_none(value)
        if scalar is not None or value is None:
            return scalar
        text = without_addresses(repr(value))
    # The value's own methods (__repr__, __len__ ...) may raise, and an int of 5,000 digits
    # refuses to print: the parameter is kept, as its type's name.
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"
    return text if len(text) <= MAX_TEXT_CHARS else f"<{type(value).__name__}>"


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
    if isinstance(value, list | tuple | dict | set | frozenset) and (
        len(repr(value)) <= MAX_TEXT_CHARS
    ):
        # `{"lr": 0.1, "db_password": "…"}`: what is under a credential's name is redacted
        return without_addresses(repr(redact_nested(value)))
    return None


def literal_assignments(source: str) -> list[Param]:
    """Top-level `name = <literal>` assignments of a cell body, in order, last one winning;
    names the cell uses as working state (accumulators, counters, lists it fills) and empty
    containers are left out (the rule: this module's docstring).

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
    try:
        working = _working_names(tree)
    except RecursionError:  # an expression nested deeper than the walk can follow
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
                if name in working or (isinstance(item, _CONTAINERS) and not item):
                    continue
                scalar = scalar_or_none(item)
                if scalar is None and item is not None:
                    continue
                found.pop(name, None)
                found[name] = make_param(name, scalar, "literal")
    return list(found.values())


_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _working_names(tree: ast.Module) -> set[str]:
    """Module-level names the cell treats as working state rather than settings: augmented
    (`acc += x`), rebound from themselves (`acc = acc + x`), rebound in a nested block or as
    a loop target, deleted, changed in place (`mine.append(x)`, `cfg["k"] = v`), or
    assigned in a function that declares them `global`."""
    top_targets: set[int] = set()
    working: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = [n for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            top_targets.update(id(name) for name in bound)
            reads = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            working.update(name.id for name in bound if name.id in reads)

    def visit(node: ast.AST, module_scope: bool, declared_global: frozenset[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _SCOPES):
                names = frozenset(
                    n for g in ast.walk(child) if isinstance(g, ast.Global) for n in g.names
                )
                visit(child, False, names if not isinstance(child, ast.ClassDef) else frozenset())
                continue
            if isinstance(child, _COMPREHENSIONS):
                visit(child, False, frozenset())
                continue
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
                # a function's own locals are not the module's names
                if (module_scope and id(child) not in top_targets) or child.id in declared_global:
                    working.add(child.id)
            elif isinstance(child, ast.Subscript | ast.Attribute) and isinstance(
                child.ctx, ast.Store | ast.Del
            ):
                base = _base_name(child)
                if base is not None:
                    working.add(base)
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in _MUTATORS
            ):
                base = _base_name(child.func)
                if base is not None:
                    working.add(base)
            visit(child, module_scope, declared_global)

    visit(tree, True, frozenset())
    return working


def _base_name(node: ast.expr) -> str | None:
    """`cfg` of `cfg["a"]["b"]`, `cfg.x`, `cfg.items.append`."""
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


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
