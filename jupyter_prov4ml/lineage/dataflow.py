"""Names a cell reads from the user's namespace, and names it binds or deletes there, found
statically with `ast` (the cell is never run for this), memoised by the source.

What counts:
- *reads*: a name loaded before the cell has definitely bound it in its top-level flow. Flow
  is followed conservatively (a name bound in only one branch of an `if`, in a loop body or in
  a `try` body is not "definitely bound" after it), because a missed read loses a lineage link
  while an extra one only names a variable the caller then finds, or not, in the namespace.
  Names that function, lambda and class bodies load from globals are reads too; a function's
  body is resolved just after its `def` statement, so recursion and methods naming their own
  class are not reads. Builtins are not filtered here: `reads_user_names` keeps the names the
  namespace actually holds.
- *binds*: every name the cell may bind at module level (assignment and unpacking, augmented
  and annotated assignment, walrus also inside comprehensions, `for`/`with`/`except` targets,
  imports, `def`/`class`, `global` names assigned in functions, `match` captures).
- *deletes*: names whose last top-level action is a removal (`del x`, or the end of an
  `except ... as x` handler); a name may be in both binds and deletes.

IPython syntax (`%magic`, `!cmd`, `x = !cmd`, `x?`) is turned into Python by IPython's own
`TransformerManager`, only when the cell needs it; the body of a known cell magic (`%%provrun`,
`%%time`, ...) and the code of `%time stmt` are analysed as Python, since they run in the user
namespace.
"""

from __future__ import annotations

import ast
import gc
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple, Protocol

from jupyter_prov4ml.identity import cell_version

DEFAULT_CELL_MAGICS: frozenset[str] = frozenset({"provrun", "time", "timeit", "capture", "prun"})
# A cell over 100 kB (some 2,500 lines) is data pasted into a notebook: analysing it would cost
# ~0.3 s here (1 MB: ~3 s, and an AST of ~150 MB), not worth delaying the user's cell for.
# params.py has the same cap.
MAX_SOURCE_CHARS = 100_000

# A line that starts with `%` or `!` is IPython syntax; a cell without one is parsed directly,
# which skips IPython's transform (~4x the cost of parsing). Other IPython syntax (`x = !ls`,
# `x?`, `/f x`) is a SyntaxError for Python, so it is caught by the fallback instead. (A
# pattern led by a literal newline is searched 4x faster than a MULTILINE `^`.)
_IPYTHON_LINE = re.compile(r"\n[ \t]*[%!]")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\r?\n)+")
# `%%timeit` runs its body inside a generated function: its reads are reads, its assignments
# stay local to that function.
_FUNCTION_SCOPED_MAGICS = frozenset({"timeit"})
# The calls IPython's transform writes for `%magic`, `%%magic`, `!cmd` and `x = !cmd`.
_IPYTHON_CALLS = frozenset({"run_line_magic", "run_cell_magic", "system", "getoutput"})
# IPython expands `$name` and `{expr}` in shell commands and magic lines from the namespace.
_DOLLAR_NAME = re.compile(r"(?<!\$)\$([A-Za-z_]\w*)")
_BRACED = re.compile(r"\{([^{}]+)\}")
_NO_FALL_THROUGH = (ast.Raise, ast.Return, ast.Continue, ast.Break)
_GET_IPYTHON = ast.Name("get_ipython", ast.Load())


class CellDataflow(NamedTuple):
    """What one cell reads from and does to the user namespace (see the module docstring).
    A tuple: one is made for every new cell source, in its hook."""

    reads: frozenset[str]
    binds: frozenset[str]
    deletes: frozenset[str]
    # `from m import *` binds names no static analysis can list.
    star_import: bool = False


# What is known of a cell that could not be analysed: nothing read, bound or deleted.
NO_DATAFLOW = CellDataflow(frozenset(), frozenset(), frozenset())


def reads_user_names(flow: CellDataflow, known: Collection[str]) -> frozenset[str]:
    """The names `flow` reads that `known` (the user namespace, or its keys) holds."""
    # A cell reads a few dozen names while a namespace may hold thousands: test each read.
    return frozenset(name for name in flow.reads if name in known)


def analyze(
    source: str, *, cell_magics: Collection[str] = DEFAULT_CELL_MAGICS
) -> CellDataflow | None:
    """Names `source` reads, binds and deletes; None when it is not Python (nor IPython)."""
    return _analyze(source, frozenset(cell_magics), MAX_SOURCE_CHARS, _IPythonSyntax())


_NOT_CACHED: Any = object()


class DataflowCache:
    """`analyze`, memoised in a bounded LRU: a cell run again costs one dictionary lookup.
    The kernel keys it by `identity.cell_version` (the source itself when short: a string
    hashes once, where a SHA-256 would cost the cell hook a hashlib call). One IPython
    transformer serves every analysis (made on first need).
    """

    def __init__(
        self,
        max_entries: int = 4096,
        *,
        cell_magics: Collection[str] = DEFAULT_CELL_MAGICS,
        max_source_chars: int = MAX_SOURCE_CHARS,
    ) -> None:
        self.max_entries = max_entries
        self.cell_magics = frozenset(cell_magics)
        self.max_source_chars = max_source_chars
        self._syntax = _IPythonSyntax()
        self._entries: OrderedDict[str, CellDataflow | None] = OrderedDict()

    def get(self, key: str, source: str, tree: ast.Module | None = None) -> CellDataflow | None:
        """The dataflow of `source`, known by `key` (itself, or its SHA-256), analysed at most
        once.

        `tree`, when given, is the AST IPython itself parsed from this cell (see
        `CellTreeCapture`): walking it skips the parse, about 80 % of a first analysis.
        """
        return self._cached(key, source, tree, _analyze_tree)

    def of_cell(self, source: str, tree: ast.Module | None = None) -> CellDataflow | None:
        """`get` for a cell that just ran, known by its `identity.cell_version`. A
        straight-line cell (most new cells) is analysed from its tree without the cache: in
        a kernel, between its own work, the cache's lookup, insertion and eviction in a
        table of thousands cost more than that analysis (cold memory, measured)."""
        if tree is not None and len(source) <= self.max_source_chars:
            flow = _straight_line_flow(tree.body)
            if flow is not None:
                return flow
        # Without a usable tree `_cached` analyses the source (which tries a straight line).
        return self._cached(cell_version(source), source, tree, _walk_tree)

    def _cached(
        self,
        key: str,
        source: str,
        tree: ast.Module | None,
        analyze_tree: Callable[[ast.Module, frozenset[str], _IPythonSyntax], CellDataflow | None],
    ) -> CellDataflow | None:
        entries = self._entries
        # Not `try: entries[key]`: a new cell would raise (and catch) a KeyError.
        found = entries.get(key, _NOT_CACHED)
        if found is not _NOT_CACHED:
            entries.move_to_end(key)
            cached: CellDataflow | None = found
            return cached
        flow = (
            analyze_tree(tree, self.cell_magics, self._syntax)
            if tree is not None and len(source) <= self.max_source_chars
            else self.analyze(source)
        )
        entries[key] = flow
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
        return flow

    def analyze(self, source: str) -> CellDataflow | None:
        """`analyze(source)` with this cache's settings and transformer, not memoised."""
        return _analyze(source, self.cell_magics, self.max_source_chars, self._syntax)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class CellTreeCapture:
    """Keeps, unchanged, the first module IPython parsed since the last `clear()`, so that the
    analysis need not parse the cell again: it wraps the shell compiler's `ast_parse`, which
    IPython parses every cell with (after `pre_run_cell`, before running it).

    A wrapper rather than an entry of `shell.ast_transformers`: any transformer there makes
    IPython run `ast.fix_missing_locations` over every cell's whole tree, in Python (as long
    as parsing it: ~4.5 µs for `x = 1`, ~3 ms for a 200-line cell, ~3x that in a kernel).
    Code a cell runs with `run_cell` (as `%%provrun` does) or `%time` parses later, so the
    first tree is the cell's. Call `clear()` in `pre_run_cell`, `take()` in `post_run_cell`;
    a cell that did not parse leaves nothing to take. `wanted` false (once detached) keeps
    nothing.
    """

    __slots__ = ("_attached", "_tree", "wanted")

    def __init__(self) -> None:
        self._tree: ast.Module | None = None
        self.wanted = True
        # (compiler, our wrapper, what it wraps, whether that was the compiler's own attribute)
        self._attached: tuple[Any, Any, Any, bool] | None = None

    def attach(self, compiler: Any) -> None:
        """Wrap `compiler.ast_parse` (IPython's `shell.compile`)."""
        parse = compiler.ast_parse
        own = "ast_parse" in vars(compiler)

        def ast_parse(source: str, filename: str = "<unknown>", symbol: str = "exec") -> Any:
            tree = parse(source, filename, symbol)
            if self.wanted and self._tree is None and isinstance(tree, ast.Module):
                self._tree = tree
            return tree

        compiler.ast_parse = ast_parse
        self._attached = (compiler, ast_parse, parse, own)

    def detach(self) -> None:
        """Undo `attach`; where something wrapped our wrapper since, ours stays, inert."""
        self.wanted = False
        self._tree = None
        if self._attached is None:
            return
        compiler, ours, parse, own = self._attached
        self._attached = None
        if vars(compiler).get("ast_parse") is ours:
            if own:
                compiler.ast_parse = parse
            else:
                del compiler.ast_parse

    def take(self) -> ast.Module | None:
        """The tree kept since the last `clear()`/`take()`, and forget it."""
        tree, self._tree = self._tree, None
        return tree

    def clear(self) -> None:
        self._tree = None


class _CellTransformer(Protocol):
    def transform_cell(self, cell: str) -> str: ...


class _IPythonSyntax:
    """IPython's cell transformer, imported and built on first use only."""

    __slots__ = ("_manager",)

    def __init__(self) -> None:
        self._manager: _CellTransformer | None = None

    def transform(self, text: str) -> str | None:
        """`text` with IPython syntax turned into Python calls, or None if IPython fails."""
        try:
            if self._manager is None:
                from IPython.core.inputtransformer2 import TransformerManager

                self._manager = TransformerManager()
            # IPython warns about some inputs (a cell without a final newline): the warning
            # would be about our analysis, not the user's code, so it is not shown.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._manager.transform_cell(text)
        # IPython's transformers run on arbitrary text here, and our failure must never break
        # the user's cell: whatever they raise means "not analysable".
        except Exception:  # noqa: BLE001
            return None


def _analyze(
    source: str, cell_magics: frozenset[str], max_chars: int, syntax: _IPythonSyntax
) -> CellDataflow | None:
    if len(source) > max_chars:
        return None
    walker = _CellWalker(cell_magics, syntax)
    # The AST is thousands of short-lived containers, all freed by refcount: with the
    # collector on, building one of 200 lines runs about three young-generation collections
    # and promotes its nodes towards the oldest generation, whose collections scan the
    # user's whole heap. Pausing it for these milliseconds avoids both.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        # A known cell magic's body is plain Python far more often than the magic line is:
        # analysing the body directly avoids IPython's transform of the whole cell.
        text = _LEADING_BLANK_LINES.sub("", source, count=1)
        if text.startswith("%%"):
            first, _, body = text.partition("\n")
            name, _, line = first[2:].strip().partition(" ")
            line = line.strip()
            if name in cell_magics:
                # What runs is `get_ipython().run_cell_magic(name, line, body)`, as in the
                # tree IPython parses (see CellTreeCapture): both give the same reads.
                # A body that is not Python is opaque, as in that tree: the magic runs and
                # fails inside.
                walker.expr(_GET_IPYTHON, walker.module)
                walker.magic_body(name, line, body, walker.module)
                return walker.result()
        tree = walker.parse(source)
        if tree is None:
            return None
        walker.block(tree.body, walker.module)
    # A valid but deeply nested cell (a 5,000-term sum, 2,000 nested lambdas) exhausts Python's
    # recursion or memory in the parser or in our walk: the cell runs (or fails) on its own.
    except (RecursionError, MemoryError):
        return None
    finally:
        if collecting:
            gc.enable()
    return walker.result()


def _analyze_tree(
    tree: ast.Module, cell_magics: frozenset[str], syntax: _IPythonSyntax
) -> CellDataflow | None:
    flow = _straight_line_flow(tree.body)
    if flow is not None:
        return flow
    return _walk_tree(tree, cell_magics, syntax)


def _walk_tree(
    tree: ast.Module, cell_magics: frozenset[str], syntax: _IPythonSyntax
) -> CellDataflow | None:
    walker = _CellWalker(cell_magics, syntax)
    try:
        walker.block(tree.body, walker.module)
    except (RecursionError, MemoryError):
        return None
    return walker.result()


def _straight_line_flow(body: list[ast.stmt]) -> CellDataflow | None:
    """The walker's result for the commonest cells, in one loop: assignments to plain names
    (`x = f(y)`, `n += 1`) and expression statements, whose expressions open no scope
    (lambda, comprehension), bind nothing (walrus) and call no magic. None for any other
    cell, which the walker then analyses. A new cell's analysis runs in its hook: this
    skips the walker's set-up and dispatch, most of the cost of a one-line cell (a test
    holds the two to the same answer)."""
    bound: set[str] = set()
    free: set[str] = set()
    for statement in body:
        kind = type(statement)
        if kind is _Assign:
            targets = statement.targets  # type: ignore[attr-defined]
            for target in targets:
                if type(target) is not _Name:
                    return None
            if not _straight_value(statement.value, bound, free):  # type: ignore[attr-defined]
                return None
            for target in targets:
                bound.add(target.id)
        elif kind is _Expr:
            if not _straight_value(statement.value, bound, free):  # type: ignore[attr-defined]
                return None
        elif kind is _AugAssign:
            target = statement.target  # type: ignore[attr-defined]
            if type(target) is not _Name:
                return None
            if target.id not in bound:
                free.add(target.id)
            if not _straight_value(statement.value, bound, free):  # type: ignore[attr-defined]
                return None
            bound.add(target.id)
        else:
            return None
    # The tuple made directly, the empty set shared (as `_shared` does): new cells only.
    return tuple.__new__(
        CellDataflow,
        (frozenset(free) if free else _EMPTY, frozenset(bound) if bound else _EMPTY, _EMPTY, False),
    )


def _straight_value(node: ast.expr, bound: set[str], free: set[str]) -> bool:
    """`_straight_loads`, a constant or a name (`x = 1`, `y = x`, `df`) without its set-up."""
    kind = type(node)
    if kind is _Constant:
        return True
    if kind is _Name:
        if node.id not in bound:  # type: ignore[attr-defined]
            free.add(node.id)  # type: ignore[attr-defined]
        return True
    return _straight_loads(node, bound, free)


def _straight_loads(node: ast.expr, bound: set[str], free: set[str]) -> bool:
    """Add the names `node` loads that `bound` lacks to `free`, as `_CellWalker.expr` does;
    False (with `free` part-filled) when `node` holds what only the walker handles."""
    stack: list[Any] = [node]
    pop, push, extend = stack.pop, stack.append, stack.extend
    fields_of = _EXPR_FIELDS
    while stack:
        current = pop()
        kind = type(current)
        if kind is _Name:
            if current.id not in bound:
                free.add(current.id)
        elif kind is _Constant:
            continue
        elif kind is _Attribute:
            push(current.value)
        elif kind is _Call:
            func = current.func
            if type(func) is _Attribute and func.attr in _IPYTHON_CALLS:
                return False
            for keyword in current.keywords:
                push(keyword.value)
            extend(current.args)
            push(func)
        elif (fields := fields_of.get(kind)) is not None:
            for field in fields:
                value = getattr(current, field)
                if type(value) is list:
                    extend(value)
                elif value is not None:
                    push(value)
        elif current is None:
            continue  # `{**d}` has None among the Dict's keys
        else:
            return False
    return True


# Scope kinds. Module and class bodies run in order, once: they are followed statement by
# statement. Function bodies (and comprehensions) decide their locals from all their bindings
# wherever they stand, so order inside them does not matter.
# Annotation scopes hold Python 3.12's type parameters (`def f[T]`, `class C[T]`).
_MODULE, _CLASS, _FUNCTION, _COMPREHENSION, _ANNOTATION = range(5)


class _Scope:
    __slots__ = ("bound", "free", "globals", "kind", "nonlocals", "parent", "stores")

    def __init__(self, kind: int, parent: _Scope | None, bound: Iterable[str] = ()) -> None:
        self.kind = kind
        self.parent = parent
        # module/class: names definitely bound at this point of the flow; function: its
        # parameters; comprehension: its targets (and walrus names, bound before their use).
        self.bound: set[str] = set(bound)
        # names loaded here, or by nested scopes, and not bound here when loaded
        self.free: set[str] = set()
        # function: every name bound anywhere in its body, i.e. its locals
        self.stores: set[str] = set()
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()


def _parameters(args: ast.arguments) -> list[str]:
    names = [arg.arg for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if args.vararg is not None:
        names.append(args.vararg.arg)
    if args.kwarg is not None:
        names.append(args.kwarg.arg)
    return names


def _falls_through(body: list[ast.stmt]) -> bool:
    """False when the block surely leaves by raise/return/break/continue: what it bound
    then never reaches the statements after it."""
    return not body or not isinstance(body[-1], _NO_FALL_THROUGH)


def _irrefutable(pattern: ast.pattern) -> bool:
    if isinstance(pattern, ast.MatchAs):
        return pattern.pattern is None or _irrefutable(pattern.pattern)
    if isinstance(pattern, ast.MatchOr):
        return any(_irrefutable(alternative) for alternative in pattern.patterns)
    return False


_Name, _Constant, _Attribute, _Call = ast.Name, ast.Constant, ast.Attribute, ast.Call
_Assign, _AugAssign, _Expr = ast.Assign, ast.AugAssign, ast.Expr
# The fields of an expression that hold sub-expressions, last first: the walk pops them from a
# stack, so they come out in evaluation order (which matters only for the walrus).
_EXPR_FIELDS: dict[type, tuple[str, ...]] = {
    ast.BoolOp: ("values",),
    ast.BinOp: ("right", "left"),
    ast.UnaryOp: ("operand",),
    ast.IfExp: ("orelse", "body", "test"),
    ast.Dict: ("values", "keys"),
    ast.Set: ("elts",),
    ast.Compare: ("comparators", "left"),
    ast.Await: ("value",),
    ast.Yield: ("value",),
    ast.YieldFrom: ("value",),
    ast.FormattedValue: ("format_spec", "value"),
    ast.JoinedStr: ("values",),
    ast.Subscript: ("slice", "value"),
    ast.Starred: ("value",),
    ast.List: ("elts",),
    ast.Tuple: ("elts",),
    ast.Slice: ("step", "upper", "lower"),
    ast.keyword: ("value",),
}
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


_EMPTY: frozenset[str] = frozenset()


def _shared(names: set[str]) -> frozenset[str]:
    """`names` frozen, the empty set shared: most cells read or delete nothing, and every set
    the analysis keeps is one more object for the kernel's garbage collector to walk."""
    return frozenset(names) if names else _EMPTY


class _CellWalker:
    """One pass over a cell's AST, tracking scopes; `result()` gives the CellDataflow."""

    def __init__(self, cell_magics: frozenset[str], syntax: _IPythonSyntax) -> None:
        self.cell_magics = cell_magics
        self.syntax = syntax
        self.module = _Scope(_MODULE, None)
        self.binds: set[str] = set()
        self.deletes: set[str] = set()
        self.star_import = False
        # Globals loaded by function bodies, resolved once the statement defining them is done.
        self.pending: set[str] = set()

    def result(self) -> CellDataflow:
        self._resolve_pending()
        return CellDataflow(
            _shared(self.module.free), _shared(self.binds), _shared(self.deletes), self.star_import
        )

    # -- parsing ------------------------------------------------------------------------------

    def parse(self, text: str) -> ast.Module | None:
        """`text` as a Python module, turned from IPython syntax first where it needs it."""
        transformed = False
        if text.lstrip(" \t")[:1] in ("%", "!") or _IPYTHON_LINE.search(text):
            text_or_none = self.syntax.transform(text)
            if text_or_none is None:
                return None
            text, transformed = text_or_none, True
        for _attempt in range(3):
            try:
                # The cell warns about its own invalid escapes when it runs; parsing it here
                # must not repeat those warnings.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return ast.parse(text)
            except SyntaxError as error:
                # A parser limit (`too many nested parentheses`, `... levels of indentation`)
                # is not IPython syntax: IPython's transform, seconds on such text, cannot help.
                if transformed or str(error.msg).startswith("too many"):
                    return None
                text_or_none = self.syntax.transform(text)
                if text_or_none is None:
                    return None
                text, transformed = text_or_none, True
            except UnicodeEncodeError:
                # Lone surrogates (text decoded with surrogateescape) cannot be encoded for the
                # parser; in strings and comments they do not change any name, so replace them.
                text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            # null bytes (Python < 3.12 says ValueError, later SyntaxError); a cell past the
            # parser's size limits (OverflowError)
            except (ValueError, OverflowError):
                return None
        return None

    def magic_body(self, name: str, line: str, body: str, scope: _Scope) -> bool:
        """Analyse the code a known magic runs in the user namespace; False if not Python."""
        self._expansions(line, scope)  # a cell magic's line is expanded, its body is not
        tree = self.parse(body)
        if tree is None:
            return False
        if name == "capture":
            # `%%capture out` binds the captured output to `out` (options start with '-').
            for word in line.split():
                if not word.startswith("-") and word.isidentifier():
                    self._store(word, scope)
        if name in _FUNCTION_SCOPED_MAGICS:
            inner = _Scope(_FUNCTION, scope)
            self.block(tree.body, inner)
            self._close_function(inner)
        else:
            self.block(tree.body, scope)
        return True

    # -- statements ---------------------------------------------------------------------------

    def block(self, body: list[ast.stmt], scope: _Scope) -> None:
        statements = _STATEMENTS
        generic = _CellWalker._generic
        for statement in body:
            statements.get(type(statement), generic)(self, statement, scope)
            if self.pending and scope.kind == _MODULE:
                self._resolve_pending()

    def _resolve_pending(self) -> None:
        module = self.module
        module.free |= self.pending - module.bound
        self.pending.clear()

    def _nothing(self, node: ast.stmt, scope: _Scope) -> None:
        pass

    def _generic(self, node: ast.AST, scope: _Scope) -> None:
        # Statements without bindings of their own (raise, assert, and any this code does not
        # know yet): their expressions are loads, their nested statements are walked.
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.block([child], scope)
            elif isinstance(child, ast.expr):
                self.expr(child, scope)

    def _value(self, node: ast.Expr | ast.Return, scope: _Scope) -> None:
        if node.value is not None:
            self.expr(node.value, scope)

    def _assign(self, node: ast.Assign, scope: _Scope) -> None:
        self.expr(node.value, scope)
        for target in node.targets:
            self._target(target, scope)

    def _aug_assign(self, node: ast.AugAssign, scope: _Scope) -> None:
        target = node.target
        if type(target) is _Name:
            self._load(target.id, scope)
            self.expr(node.value, scope)
            self._store(target.id, scope)
        else:
            self.expr(target, scope)
            self.expr(node.value, scope)

    def _ann_assign(self, node: ast.AnnAssign, scope: _Scope) -> None:
        if node.value is not None:
            self.expr(node.value, scope)
        # Annotations count as reads (they are evaluated at module level; inside functions
        # they are not, but a name used in one is almost always a global anyway).
        self.expr(node.annotation, scope)
        target = node.target
        if type(target) is not _Name:
            self.expr(target, scope)
        elif node.value is not None:
            self._store(target.id, scope)
        elif scope.kind == _FUNCTION:
            scope.stores.add(target.id)  # `x: int` alone still makes x local to a function

    def _if(self, node: ast.If, scope: _Scope) -> None:
        self.expr(node.test, scope)
        if scope.kind > _CLASS:
            self.block(node.body, scope)
            self.block(node.orelse, scope)
            return
        saved = scope.bound
        scope.bound = set(saved)
        self.block(node.body, scope)
        after_body = scope.bound
        scope.bound = set(saved)
        self.block(node.orelse, scope)
        if not _falls_through(node.body):
            return  # after the `if`, only the else branch's bindings hold
        if _falls_through(node.orelse):
            scope.bound &= after_body
        else:
            scope.bound = after_body

    def _loop(
        self, target: ast.expr | None, node: ast.For | ast.AsyncFor | ast.While, scope: _Scope
    ) -> None:
        if scope.kind > _CLASS:
            if target is not None:
                self._target(target, scope)
            self.block(node.body, scope)
            self.block(node.orelse, scope)
            return
        # The body may run no time at all: what it binds is not bound after the loop, and
        # what it deletes may be gone.
        saved = scope.bound
        scope.bound = set(saved)
        if target is not None:
            self._target(target, scope)
        self.block(node.body, scope)
        start = saved & scope.bound
        scope.bound = set(start)
        self.block(node.orelse, scope)
        scope.bound &= start

    def _for(self, node: ast.For | ast.AsyncFor, scope: _Scope) -> None:
        self.expr(node.iter, scope)
        self._loop(node.target, node, scope)

    def _while(self, node: ast.While, scope: _Scope) -> None:
        self.expr(node.test, scope)
        self._loop(None, node, scope)

    def _with(self, node: ast.With | ast.AsyncWith, scope: _Scope) -> None:
        for item in node.items:
            self.expr(item.context_expr, scope)
            if item.optional_vars is not None:
                self._target(item.optional_vars, scope)
        # The body counts as run: a context manager that suppresses an exception
        # (contextlib.suppress) is the exception, `with open(...) as f: data = ...` the rule.
        self.block(node.body, scope)

    def _handler(self, handler: ast.ExceptHandler, scope: _Scope) -> None:
        if handler.type is not None:
            self.expr(handler.type, scope)
        if handler.name is not None:
            self._store(handler.name, scope)
        self.block(handler.body, scope)
        if handler.name is not None:
            self._delete(handler.name, scope)  # Python deletes `as` names after the handler

    def _try(self, node: ast.Try, scope: _Scope) -> None:
        if scope.kind > _CLASS:
            self.block(node.body, scope)
            for handler in node.handlers:
                self._handler(handler, scope)
            self.block(node.orelse, scope)
            self.block(node.finalbody, scope)
            return
        saved = scope.bound
        scope.bound = set(saved)
        self.block(node.body, scope)
        body_end = scope.bound
        # A handler may start anywhere in the body: only what was bound before it, and was
        # not deleted by it, is surely bound there.
        handler_start = saved & body_end
        handler_ends = []
        for handler in node.handlers:
            scope.bound = set(handler_start)
            self._handler(handler, scope)
            if _falls_through(handler.body):
                handler_ends.append(scope.bound)
        scope.bound = body_end
        self.block(node.orelse, scope)
        for end in handler_ends:
            scope.bound &= end
        self.block(node.finalbody, scope)

    def _match(self, node: ast.Match, scope: _Scope) -> None:
        self.expr(node.subject, scope)
        sequential = scope.kind <= _CLASS
        saved = scope.bound
        ends = []
        exhaustive = False
        for case in node.cases:
            if sequential:
                scope.bound = set(saved)
            self._pattern(case.pattern, scope)
            if case.guard is not None:
                self.expr(case.guard, scope)
            self.block(case.body, scope)
            if _falls_through(case.body):
                ends.append(scope.bound)
            exhaustive = exhaustive or (case.guard is None and _irrefutable(case.pattern))
        if sequential:
            scope.bound = set(saved)
            if exhaustive and ends:
                scope.bound = ends[0]
                for end in ends[1:]:
                    scope.bound &= end
            else:
                for end in ends:
                    scope.bound &= end

    def _pattern(self, pattern: ast.pattern, scope: _Scope) -> None:
        if isinstance(pattern, ast.MatchValue):
            self.expr(pattern.value, scope)
        elif isinstance(pattern, ast.MatchAs):
            if pattern.pattern is not None:
                self._pattern(pattern.pattern, scope)
            if pattern.name is not None:
                self._store(pattern.name, scope)
        elif isinstance(pattern, ast.MatchStar):
            if pattern.name is not None:
                self._store(pattern.name, scope)
        elif isinstance(pattern, ast.MatchSequence | ast.MatchOr):
            for inner in pattern.patterns:
                self._pattern(inner, scope)
        elif isinstance(pattern, ast.MatchMapping):
            for key in pattern.keys:
                self.expr(key, scope)
            for inner in pattern.patterns:
                self._pattern(inner, scope)
            if pattern.rest is not None:
                self._store(pattern.rest, scope)
        elif isinstance(pattern, ast.MatchClass):
            self.expr(pattern.cls, scope)
            for inner in (*pattern.patterns, *pattern.kwd_patterns):
                self._pattern(inner, scope)
        # MatchSingleton (None, True, False) binds and reads nothing

    def _function_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef, scope: _Scope) -> None:
        # Decorators, defaults and annotations are evaluated where the function is defined.
        for decorator in node.decorator_list:
            self.expr(decorator, scope)
        args = node.args
        for default in (*args.defaults, *args.kw_defaults):
            if default is not None:
                self.expr(default, scope)
        outer = self._type_params_scope(node, scope)
        for arg in (*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg):
            if arg is not None and arg.annotation is not None:
                self.expr(arg.annotation, outer)
        if node.returns is not None:
            self.expr(node.returns, outer)
        inner = _Scope(_FUNCTION, outer, _parameters(args))
        self.block(node.body, inner)
        self._close_function(inner)
        if outer is not scope:
            self._close_comprehension(outer)
        self._store(node.name, scope)

    def _class_def(self, node: ast.ClassDef, scope: _Scope) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator, scope)
        outer = self._type_params_scope(node, scope)
        for base in node.bases:
            self.expr(base, outer)
        for keyword in node.keywords:
            self.expr(keyword.value, outer)
        body = _Scope(_CLASS, outer)
        self.block(node.body, body)
        # The class body ran now, before its name is bound: its free names resolve now too.
        if body.free:
            self._propagate(body.free, body, deferred=False)
        if outer is not scope:
            self._close_comprehension(outer)
        self._store(node.name, scope)

    def _type_params_scope(self, node: ast.AST, scope: _Scope) -> _Scope:
        """Python 3.12's `def f[T]()` / `class C[T]`: the type parameters live in a scope of
        their own around the annotations, bases and body."""
        params = getattr(node, "type_params", None)
        if not params:
            return scope
        return _Scope(_ANNOTATION, scope, (param.name for param in params))

    def _type_alias(self, node: Any, scope: _Scope) -> None:
        # `type X[T] = value`: the value is evaluated lazily, like a function body.
        outer = self._type_params_scope(node, scope)
        inner = _Scope(_FUNCTION, outer)
        self.expr(node.value, inner)
        self._close_function(inner)
        if outer is not scope:
            self._close_comprehension(outer)
        self._store(node.name.id, scope)

    def _import(self, node: ast.Import, scope: _Scope) -> None:
        for alias in node.names:
            # `import a.b.c` binds `a`; `import a.b.c as d` binds `d`.
            self._store(alias.asname or alias.name.partition(".")[0], scope)

    def _import_from(self, node: ast.ImportFrom, scope: _Scope) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.star_import = True
            else:
                self._store(alias.asname or alias.name, scope)

    def _delete_statement(self, node: ast.Delete, scope: _Scope) -> None:
        for target in node.targets:
            self._delete_target(target, scope)

    def _delete_target(self, target: ast.expr, scope: _Scope) -> None:
        if isinstance(target, ast.Name):
            self._delete(target.id, scope)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._delete_target(element, scope)
        else:
            self.expr(target, scope)  # `del d[k]`, `del a.b`: loads of d, k, a

    def _global(self, node: ast.Global, scope: _Scope) -> None:
        scope.globals.update(node.names)

    def _nonlocal(self, node: ast.Nonlocal, scope: _Scope) -> None:
        scope.nonlocals.update(node.names)

    # -- names --------------------------------------------------------------------------------

    def _load(self, name: str, scope: _Scope) -> None:
        if name not in scope.bound:
            scope.free.add(name)

    def _store(self, name: str, scope: _Scope) -> None:
        kind = scope.kind
        if kind == _MODULE:
            self.binds.add(name)
            self.deletes.discard(name)
            scope.bound.add(name)
        elif kind == _FUNCTION or name in scope.globals:
            scope.stores.add(name)
            if name in scope.globals:  # `global x` then `x = ...`: a module-level binding
                self.binds.add(name)
                self.deletes.discard(name)
        else:
            scope.bound.add(name)

    def _delete(self, name: str, scope: _Scope) -> None:
        if scope.kind == _MODULE or name in scope.globals:
            self.deletes.add(name)
        else:
            scope.stores.add(name)  # `del x` makes x local to a function
        scope.bound.discard(name)

    def _walrus(self, name: str, scope: _Scope) -> None:
        """PEP 572: `(x := v)` binds x in the nearest enclosing scope that is not a
        comprehension; inside one, it may not run at all, so it is not a definite binding."""
        in_comprehension = False
        while scope.kind == _COMPREHENSION and scope.parent is not None:
            scope.bound.add(name)  # bound before its later uses in the comprehension
            scope = scope.parent
            in_comprehension = True
        if scope.kind == _MODULE and in_comprehension:
            self.binds.add(name)
            self.deletes.discard(name)
        else:
            self._store(name, scope)

    def _target(self, target: ast.expr, scope: _Scope) -> None:
        if isinstance(target, ast.Name):
            self._store(target.id, scope)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._target(element, scope)
        elif isinstance(target, ast.Starred):
            self._target(target.value, scope)
        else:
            self.expr(target, scope)  # `d[k] = v`, `obj.x = v`: loads of d, k, obj

    # -- scopes -------------------------------------------------------------------------------

    def _propagate(self, names: set[str], child: _Scope, *, deferred: bool) -> None:
        """Hand a closed scope's free names to the scope that resolves them. Class bodies are
        skipped: their names are not visible to the functions and comprehensions inside."""
        parent = child.parent
        while parent is not None and (
            parent.kind == _CLASS or (deferred and parent.kind == _ANNOTATION)
        ):
            # A method of `class C[T]` runs later, when C is bound: only T is resolved here.
            if parent.kind == _ANNOTATION:
                names = names - parent.bound
            parent = parent.parent
        if parent is None:
            return
        if parent.kind != _MODULE:
            parent.free |= names
        elif deferred:
            self.pending |= names
        else:
            parent.free |= names - parent.bound

    def _close_function(self, scope: _Scope) -> None:
        local = (scope.stores | scope.bound) - scope.globals
        free = scope.free - local - scope.nonlocals
        if free:
            self._propagate(free, scope, deferred=True)

    def _close_comprehension(self, scope: _Scope) -> None:
        free = scope.free - scope.bound
        if free:
            self._propagate(free, scope, deferred=False)

    def _lambda(self, node: ast.Lambda, scope: _Scope) -> None:
        args = node.args
        for default in (*args.defaults, *args.kw_defaults):
            if default is not None:
                self.expr(default, scope)
        inner = _Scope(_FUNCTION, scope, _parameters(args))
        self.expr(node.body, inner)
        self._close_function(inner)

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp, scope: _Scope
    ) -> None:
        generators = node.generators
        # The first iterable is evaluated in the enclosing scope; the rest inside.
        self.expr(generators[0].iter, scope)
        inner = _Scope(_COMPREHENSION, scope)
        for index, generator in enumerate(generators):
            if index:
                self.expr(generator.iter, inner)
            self._target(generator.target, inner)
            for condition in generator.ifs:
                self.expr(condition, inner)
        if isinstance(node, ast.DictComp):
            self.expr(node.key, inner)
            self.expr(node.value, inner)
        else:
            self.expr(node.elt, inner)
        self._close_comprehension(inner)

    # -- expressions --------------------------------------------------------------------------

    def expr(self, node: ast.expr, scope: _Scope) -> None:
        """Record the loads in `node`, in evaluation order.

        An explicit stack rather than recursion: a 5,000-term sum is a 5,000-deep tree, and
        this is the hot loop (most of a cell's nodes are expressions), so the common node
        kinds are tested first, inline.
        """
        # Any: nodes are dispatched on `type(...) is`, which is faster than isinstance and
        # which mypy cannot narrow through a local variable.
        kind: Any = type(node)
        if kind is _Name:  # a third of all calls: skip building the stack
            name: str = node.id  # type: ignore[attr-defined]
            if name not in scope.bound:
                scope.free.add(name)
            return
        if kind is _Constant:
            return
        stack: list[Any] = [node]
        pop, push, extend = stack.pop, stack.append, stack.extend
        bound, free = scope.bound, scope.free
        fields_of = _EXPR_FIELDS
        # Locals, not globals, in the loop.
        name_type, attribute_type, constant_type, call_type = _Name, _Attribute, _Constant, _Call
        while stack:
            current = pop()
            kind = type(current)
            if kind is name_type:
                name = current.id
                if name not in bound:
                    free.add(name)
            elif kind is attribute_type:
                push(current.value)
            elif kind is constant_type:
                continue
            elif kind is call_type:
                func = current.func
                if type(func) is attribute_type and func.attr in _IPYTHON_CALLS:
                    self._ipython_call(current, scope)
                    bound = scope.bound  # a magic's statements may have replaced the set
                if current.keywords:
                    for keyword in reversed(current.keywords):
                        push(keyword.value)
                if current.args:
                    extend(reversed(current.args))
                push(func)
            elif (fields := fields_of.get(kind)) is not None:
                for field in fields:
                    value = getattr(current, field)
                    if type(value) is list:
                        extend(reversed(value))
                    elif value is not None:
                        push(value)
            elif current is None:
                continue  # `{**d}` has None among the Dict's keys
            elif kind is ast.NamedExpr:
                self.expr(current.value, scope)
                self._walrus(current.target.id, scope)
                bound = scope.bound
            elif kind is ast.Lambda:
                self._lambda(current, scope)
            elif isinstance(current, _COMPREHENSIONS):
                self._comprehension(current, scope)
            elif isinstance(current, ast.expr):
                # An expression kind this code does not know yet: walk its children as loads.
                extend(reversed(list(ast.iter_child_nodes(current))))

    def _ipython_call(self, call: ast.Call, scope: _Scope) -> None:
        """What IPython's transform wrote for a magic or a shell command: the names a command
        line expands are reads, and the code a known magic runs is analysed in place
        (`%time x = f()` becomes `get_ipython().run_line_magic('time', 'x = f()')`)."""
        func: Any = call.func
        owner = func.value
        if not (
            type(owner) is _Call
            and type(owner.func) is _Name
            and owner.func.id == "get_ipython"
            and call.args
            and all(type(arg) is _Constant and type(arg.value) is str for arg in call.args)
        ):
            return
        values: list[str] = [arg.value for arg in call.args]  # type: ignore[attr-defined]
        method = func.attr
        if method in ("system", "getoutput"):
            self._expansions(values[0], scope)
        elif len(values) < 2:
            return
        elif values[0] not in self.cell_magics:
            self._expansions(values[1], scope)
        elif method == "run_line_magic":
            # `%time` and friends take code, which IPython does not expand.
            self.magic_body(values[0], "", values[1], scope)
        elif len(values) >= 3:
            self.magic_body(values[0], values[1], values[2], scope)

    def _expansions(self, line: str, scope: _Scope) -> None:
        """Reads of `$name` and `{expr}` in a line IPython expands from the user namespace."""
        if "$" not in line and "{" not in line:
            return
        for name in _DOLLAR_NAME.findall(line):
            self._load(name, scope)
        for braced in _BRACED.findall(line):
            # `{x!r}` and `{x:>8}` carry a conversion or a format after the expression.
            for text in (braced, re.split(r"[!:]", braced, maxsplit=1)[0]):
                try:
                    tree = ast.parse(text.strip(), mode="eval")
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    continue
                self.expr(tree.body, scope)
                break


# Statement handlers by node type, built once (a per-cell table cost ~10 µs a cell).
_STATEMENTS: dict[type, Callable[[_CellWalker, Any, _Scope], None]] = {
    ast.Expr: _CellWalker._value,
    ast.Return: _CellWalker._value,
    ast.Assign: _CellWalker._assign,
    ast.AugAssign: _CellWalker._aug_assign,
    ast.AnnAssign: _CellWalker._ann_assign,
    ast.If: _CellWalker._if,
    ast.For: _CellWalker._for,
    ast.AsyncFor: _CellWalker._for,
    ast.While: _CellWalker._while,
    ast.With: _CellWalker._with,
    ast.AsyncWith: _CellWalker._with,
    ast.Try: _CellWalker._try,
    ast.FunctionDef: _CellWalker._function_def,
    ast.AsyncFunctionDef: _CellWalker._function_def,
    ast.ClassDef: _CellWalker._class_def,
    ast.Import: _CellWalker._import,
    ast.ImportFrom: _CellWalker._import_from,
    ast.Delete: _CellWalker._delete_statement,
    ast.Global: _CellWalker._global,
    ast.Nonlocal: _CellWalker._nonlocal,
    ast.Match: _CellWalker._match,
    ast.Raise: _CellWalker._generic,
    ast.Assert: _CellWalker._generic,
    ast.Pass: _CellWalker._nothing,
    ast.Break: _CellWalker._nothing,
    ast.Continue: _CellWalker._nothing,
}
# Newer syntax, where this Python has it (3.11: `except*`; 3.12: `type X = ...`).
if hasattr(ast, "TryStar"):
    _STATEMENTS[ast.TryStar] = _CellWalker._try
if hasattr(ast, "TypeAlias"):
    _STATEMENTS[ast.TypeAlias] = _CellWalker._type_alias
