"""Static dataflow of notebook cells: which names a cell reads from the user namespace and
which it binds or deletes, for the cell shapes people write, IPython syntax included, without
ever raising on text that is not Python."""

from __future__ import annotations

import ast
import contextlib
import gc
import math
import re
import time
import unicodedata
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_prov4ml.identity import source_sha256
from jupyter_prov4ml.lineage import dataflow
from jupyter_prov4ml.lineage.dataflow import (
    DEFAULT_CELL_MAGICS,
    MAX_SOURCE_CHARS,
    CellDataflow,
    CellTreeCapture,
    DataflowCache,
    analyze,
    reads_user_names,
)


def _case(cell_id: str, source: str, reads: str, binds: str) -> Any:
    """A corpus entry: expected reads and binds as space-separated names."""
    return pytest.param(source, frozenset(reads.split()), frozenset(binds.split()), id=cell_id)


CORPUS = [
    # -- imports ----------------------------------------------------------------------------
    _case("import", "import numpy\nimport os, sys\n", "", "numpy os sys"),
    _case("import-dotted", "import a.b.c\nimport torch.nn.functional\n", "", "a torch"),
    _case("import-as", "import numpy as np\nimport a.b.c as abc\n", "", "np abc"),
    _case("from-import", "from torch import nn, optim as opt\n", "", "nn opt"),
    _case("from-relative", "from . import helpers\nfrom ..pkg import mod as m\n", "", "helpers m"),
    _case("import-then-use", "import numpy as np\nx = np.zeros(3)\n", "", "np x"),
    # -- assignment forms -------------------------------------------------------------------
    _case("assign", "x = y + 1\n", "y", "x"),
    _case("chained", "a = b = c\n", "c", "a b"),
    _case("tuple-unpack", "a, b = b, a\n", "a b", "a b"),
    _case("nested-unpack", "(a, [b, c]), d = t\n", "t", "a b c d"),
    _case("star-unpack", "first, *rest = items\n", "items", "first rest"),
    _case("aug-assign", "total += x\n", "total x", "total"),
    _case("aug-assign-bound", "total = 0\ntotal += x\n", "x", "total"),
    _case("aug-assign-item", "counts[k] += 1\n", "counts k", ""),
    _case("subscript-assign", "d[k] = v\n", "d k v", ""),
    _case("attribute-assign", "model.fc = head\n", "model head", ""),
    _case("slice-assign", "a[i:j] = b\n", "a i j b", ""),
    _case("annotated", "lr: float = base * 0.1\n", "base float", "lr"),
    _case("annotated-no-value", "lr: float\n", "float", ""),
    _case("annotated-attribute", "self.x: int = 0\n", "self int", ""),
    _case("read-then-bind", "x = x + 1\n", "x", "x"),
    _case("bind-then-read", "x = 1\ny = x\n", "", "x y"),
    _case("attribute-read", "out = np.array(data).T\n", "np data", "out"),
    _case("fstring", "msg = f'{name!r:>{width}} {cfg.lr:.3f}'\n", "name width cfg", "msg"),
    _case("fstring-nested", "s = f\"{f'{a}'}{b[c]}\"\n", "a b c", "s"),
    _case("dict-splat", "cfg = {**base, 'lr': lr}\n", "base lr", "cfg"),
    _case("slice-read", "tail = xs[n:]\n", "xs n", "tail"),
    _case("call-kwargs", "fit(X, y=Y, **opts)\n", "fit X Y opts", ""),
    _case("starred-call", "f(*args)\n", "f args", ""),
    _case("conditional-expr", "v = a if c else b\n", "a b c", "v"),
    _case("await", "result = await fetch(url)\n", "fetch url", "result"),
    # -- functions and lambdas --------------------------------------------------------------
    _case("def-reads-global", "def f(x):\n    return x * scale + g(x)\n", "scale g", "f"),
    _case("def-local", "def f():\n    y = 2\n    return y\n", "", "f"),
    _case("def-local-later", "def f():\n    print(y)\n    y = 2\n", "print", "f"),
    _case("def-params", "def f(a, /, b, *c, d, **e):\n    return a, b, c, d, e\n", "", "f"),
    _case("def-defaults", "def f(a=lr, *, b=eps):\n    pass\n", "lr eps", "f"),
    _case("def-annotations", "def f(x: Tensor) -> Out:\n    pass\n", "Tensor Out", "f"),
    _case("decorator", "@torch.no_grad()\ndef ev(m):\n    return m\n", "torch", "ev"),
    _case("decorator-bare", "@cache\ndef f():\n    pass\n", "cache", "f"),
    _case("recursion", "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n", "", "fact"),
    _case("def-before-bind", "def f():\n    return model\nmodel = 1\n", "model", "f model"),
    _case("def-after-bind", "model = 1\ndef f():\n    return model\n", "", "model f"),
    _case("async-def", "async def f():\n    await g()\n", "g", "f"),
    _case("lambda", "f = lambda x, y=yd: x + z\n", "yd z", "f"),
    _case("lambda-self", "fib = lambda n: n if n < 2 else fib(n - 1) + fib(n - 2)\n", "", "fib"),
    _case("lambda-inline", "ys = sorted(xs, key=lambda r: r[col])\n", "sorted xs col", "ys"),
    _case(
        "closure",
        "def outer():\n    v = 1\n    def inner():\n        return v + w\n    return inner\n",
        "w",
        "outer",
    ),
    _case(
        "nonlocal",
        "def outer():\n    v = 0\n    def inc():\n        nonlocal v\n        v += step\n"
        "    return inc\n",
        "step",
        "outer",
    ),
    _case("global", "def reset():\n    global counter\n    counter = 0\n", "", "reset counter"),
    _case(
        "global-aug",
        "def bump():\n    global counter\n    counter += step\n",
        "counter step",
        "bump counter",
    ),
    _case("global-read-only", "def f():\n    global g\n    return g\n", "g", "f"),
    _case("def-del-local", "def f():\n    x = 1\n    del x\n", "", "f"),
    _case("yield", "def gen():\n    yield from source\n    yield extra\n", "source extra", "gen"),
    # -- classes ----------------------------------------------------------------------------
    _case(
        "class",
        "class MLP(nn.Module):\n    hidden = width\n    def forward(self, x):\n"
        "        return self.net(x) + bias\n",
        "nn width bias",
        "MLP",
    ),
    _case("class-own-name", "class A:\n    def clone(self):\n        return A()\n", "", "A"),
    _case("class-body-name", "class A:\n    x = 1\n    y = x + 1\n", "", "A"),
    _case(
        "class-method-no-class-names",
        "class A:\n    x = 1\n    def m(self):\n        return x\n",
        "x",
        "A",
    ),
    _case("class-kwargs", "class A(Base, metaclass=Meta):\n    pass\n", "Base Meta", "A"),
    _case(
        "class-decorator",
        "@dataclass(frozen=True)\nclass P:\n    x: int = 0\n",
        "dataclass int",
        "P",
    ),
    _case(
        "class-comprehension",
        "class A:\n    xs = [1]\n    ys = [v for v in xs if v in zs]\n",
        "zs",
        "A",
    ),
    # -- comprehensions ---------------------------------------------------------------------
    _case("listcomp", "ys = [x * k for x in xs if x > t]\n", "xs k t", "ys"),
    _case("listcomp-var-not-bound", "ys = [x for x in xs]\nprint(x)\n", "xs print x", "ys"),
    _case("nested-comp", "r = [[a for a in row] for row in grid]\n", "grid", "r"),
    _case("multi-for-comp", "p = [(i, j) for i in range(n) for j in range(i)]\n", "range n", "p"),
    _case("dictcomp", "d = {k: v for k, v in pairs.items()}\n", "pairs", "d"),
    _case("setcomp", "s = {f(x) for x in xs}\n", "f xs", "s"),
    _case("genexp", "total = sum(x * x for x in xs)\n", "sum xs", "total"),
    _case("comp-reads-outer", "ys = [x + offset for x in xs]\n", "offset xs", "ys"),
    _case("comp-outer-bound", "offset = 1\nys = [x + offset for x in xs]\n", "xs", "offset ys"),
    _case("comp-lambda", "fs = [lambda: i for i in range(3)]\n", "range", "fs"),
    # -- walrus -----------------------------------------------------------------------------
    _case("walrus-top", "if (n := len(data)) > 0:\n    print(n)\n", "len data print", "n"),
    _case("walrus-then-read", "(y := 1) + y\n", "", "y"),
    _case("walrus-comp", "hits = [y for v in vs if (y := f(v))]\n", "vs f", "hits y"),
    _case(
        "walrus-comp-then-read", "any((h := x) > 3 for x in xs)\nprint(h)\n", "any xs print h", "h"
    ),
    _case("walrus-in-function", "def f():\n    return [y := g(v) for v in w]\n", "g w", "f"),
    # -- control flow -----------------------------------------------------------------------
    _case(
        "for",
        "for i, v in enumerate(items):\n    acc = acc + v\n",
        "enumerate items acc",
        "i v acc",
    ),
    _case("for-target-maybe", "for i in range(n):\n    pass\nprint(i)\n", "range n print i", "i"),
    _case("for-else", "for x in xs:\n    break\nelse:\n    found = None\n", "xs", "x found"),
    _case("while", "while loss > tol:\n    loss = step(loss)\n", "loss tol step", "loss"),
    _case("if-both-branches", "if c:\n    x = 1\nelse:\n    x = 2\nprint(x)\n", "c print", "x"),
    _case("if-one-branch", "if c:\n    x = 1\nprint(x)\n", "c print x", "x"),
    _case("if-raise-branch", "if c:\n    raise E\nelse:\n    x = 1\nprint(x)\n", "c E print", "x"),
    _case(
        "elif",
        "if a:\n    m = 1\nelif b:\n    m = 2\nelse:\n    m = 3\nuse(m)\n",
        "a b use",
        "m",
    ),
    _case(
        "with",
        "with open(p) as fh:\n    data = fh.read()\nprint(data)\n",
        "open p print",
        "fh data",
    ),
    _case(
        "with-multi",
        "with torch.no_grad(), open(p) as (f):\n    pass\n",
        "torch open p",
        "f",
    ),
    _case(
        "try-fallback",
        "try:\n    import matplotlib.pyplot as plt\nexcept ImportError:\n    plt = None\nplt\n",
        "ImportError",
        "plt",
    ),
    _case(
        "try-except-as",
        "try:\n    v = risky()\nexcept ValueError as err:\n    log(err)\n",
        "risky ValueError log",
        "v err",
    ),
    _case(
        "try-maybe-bound",
        "try:\n    v = risky()\nexcept E:\n    pass\nprint(v)\n",
        "risky E print v",
        "v",
    ),
    _case(
        "try-reraise",
        "try:\n    v = risky()\nexcept E:\n    raise\nprint(v)\n",
        "risky E print",
        "v",
    ),
    _case(
        "try-finally",
        "try:\n    f = open(p)\nfinally:\n    done = True\nprint(f, done)\n",
        "open p print",
        "f done",
    ),
    _case("except-star", "try:\n    pass\nexcept* OSError as eg:\n    h(eg)\n", "OSError h", "eg"),
    _case(
        "match",
        "match cmd:\n"
        "    case Point(x=px, y=0):\n        q = px\n"
        "    case [first, *rest]:\n        q = first\n"
        "    case {'k': kv, **others}:\n        q = kv\n"
        "    case Color.RED | None:\n        q = red\n"
        "    case str() as s if s:\n        q = s\n"
        "    case _:\n        q = None\n"
        "print(q)\n",
        "cmd Point Color red str print",
        "px first rest kv others s q",
    ),
    _case(
        "match-not-exhaustive",
        "match v:\n    case 1:\n        w = 1\nprint(w)\n",
        "v print w",
        "w",
    ),
    _case(
        "match-capture-all",
        "match v:\n    case other:\n        w = other\nprint(w)\n",
        "v print",
        "other w",
    ),
    _case("assert", "assert x > 0, msg\n", "x msg", ""),
    _case("raise", "raise ValueError(msg) from err\n", "ValueError msg err", ""),
    _case("del-item", "del d[k]\n", "d k", ""),
    _case("del-attr", "del obj.attr\n", "obj", ""),
    # -- IPython syntax ---------------------------------------------------------------------
    _case("line-magic", "%matplotlib inline\nimport numpy as np\n", "get_ipython", "np"),
    _case("line-magic-after-code", "x = 1\n%who\ny = x\n", "get_ipython", "x y"),
    _case("time-line-magic", "%time x = f(y)\n", "get_ipython f y", "x"),
    _case("time-assign", "t = %timeit -o f()\n", "get_ipython", "t"),
    _case("shell", "!ls\n", "get_ipython", ""),
    _case("shell-capture", "files = !ls *.csv\n", "get_ipython", "files"),
    _case("shell-expansion", "!wget {url} -O $out_path\n", "get_ipython url out_path", ""),
    _case("shell-not-expansion", "!awk '{print $1}' $$HOME f\n", "get_ipython", ""),
    _case("help", "model?\n", "get_ipython", ""),
    _case("magic-in-function", "def f():\n    x = !ls\n    return x\n", "get_ipython", "f"),
    _case("cell-magic-time", "%%time\nz = w + 1\n", "get_ipython w", "z"),
    _case(
        "cell-magic-provrun",
        "%%provrun --param lr=0.1\nmodel = train(lr)\n",
        "get_ipython train lr",
        "model",
    ),
    _case(
        "cell-magic-expansion", "%%provrun --param lr={lr0}\nm = t()\n", "get_ipython lr0 t", "m"
    ),
    _case("cell-magic-leading-blank", "\n\n%%time\nz = w\n", "get_ipython w", "z"),
    _case(
        "cell-magic-body-magics", "%%time\n%matplotlib inline\n!ls\nq = r\n", "get_ipython r", "q"
    ),
    _case(
        "cell-magic-capture", "%%capture out --no-stderr\nprint(q)\n", "get_ipython print q", "out"
    ),
    _case("cell-magic-timeit", "%%timeit\nr = f(q)\n", "get_ipython f q", ""),
    _case("cell-magic-prun", "%%prun\nres = run()\n", "get_ipython run", "res"),
    _case("cell-magic-other", "%%bash\necho $HOME\nx = 1\n", "get_ipython", ""),
    _case("cell-magic-writefile", "%%writefile f.py\nimport os\n", "get_ipython", ""),
    _case("autocall-escape", "/print x\n", "print x", ""),
]


@pytest.mark.parametrize(("source", "reads", "binds"), CORPUS)
def test_corpus(source: str, reads: frozenset[str], binds: frozenset[str]) -> None:
    """Each real-world cell shape gives exactly the expected reads and binds."""
    flow = analyze(source)
    assert flow is not None
    assert (flow.reads, flow.binds) == (reads, binds)


@pytest.mark.parametrize(
    ("source", "deletes", "binds"),
    [
        ("del x\n", "x", ""),
        ("del a, (b, c)\n", "a b c", ""),
        ("x = 1\ndel x\n", "x", "x"),
        ("del x\nx = 2\n", "", "x"),
        ("try:\n    pass\nexcept E as err:\n    pass\n", "err", "err"),
        ("try:\n    pass\nexcept E as err:\n    pass\nerr = 1\n", "", "err"),
        ("def f():\n    global g\n    del g\n", "g", "f"),
        ("def f():\n    x = 1\n    del x\n", "", "f"),
        ("if c:\n    del x\n", "x", ""),
    ],
)
def test_deletes(source: str, deletes: str, binds: str) -> None:
    """`deletes` lists the names a cell leaves removed (del, or an `except ... as` name)."""
    flow = analyze(source)
    assert flow is not None
    assert flow.deletes == frozenset(deletes.split())
    assert flow.binds == frozenset(binds.split())


def test_del_then_read_is_a_read() -> None:
    """A name read after the cell deleted it is not bound by the cell at that point."""
    flow = analyze("x = 1\ndel x\nprint(x)\n")
    assert flow is not None
    assert "x" in flow.reads


@pytest.mark.parametrize(
    ("source", "star"),
    [("from os.path import *\n", True), ("from os.path import join\n", False), ("x = 1\n", False)],
)
def test_star_import_flag(source: str, star: bool) -> None:
    """`from m import *` is flagged, since the names it binds cannot be listed statically."""
    flow = analyze(source)
    assert flow is not None
    assert flow.star_import is star
    if star:
        assert flow.binds == frozenset()


def test_builtins_are_not_filtered_and_reads_user_names_intersects() -> None:
    """Builtins stay in `reads`; `reads_user_names` keeps what the namespace holds."""
    flow = analyze("print(len(data), model, missing)\n")
    assert flow is not None
    assert flow.reads == {"print", "len", "data", "model", "missing"}
    namespace = {"data": [1], "model": object(), "unrelated": 2}
    assert reads_user_names(flow, namespace) == {"data", "model"}
    assert reads_user_names(flow, {"data"}) == {"data"}
    assert reads_user_names(flow, ()) == frozenset()


def test_cell_dataflow_is_frozen_with_slots() -> None:
    """CellDataflow is an immutable value with slots (cheap to keep one per cell version)."""
    flow = CellDataflow(frozenset({"a"}), frozenset(), frozenset())
    assert not hasattr(flow, "__dict__")
    with pytest.raises(AttributeError):
        flow.reads = frozenset()  # type: ignore[misc]
    assert flow.star_import is False


# -- magics configuration -------------------------------------------------------------------


def test_default_cell_magics() -> None:
    """The default code-running cell magics are provrun, time, timeit, capture and prun."""
    assert sorted(DEFAULT_CELL_MAGICS) == ["capture", "provrun", "prun", "time", "timeit"]


def test_cell_magics_are_configurable() -> None:
    """A cell magic added to the set has its body analysed; one removed is opaque."""
    source = "%%mymagic --flag\nx = y\n"
    assert analyze(source) == CellDataflow(frozenset({"get_ipython"}), frozenset(), frozenset())
    custom = analyze(source, cell_magics={"mymagic"})
    assert custom is not None
    assert (custom.reads, custom.binds) == ({"get_ipython", "y"}, {"x"})
    opaque = analyze("%%time\nx = y\n", cell_magics=())
    assert opaque is not None
    assert (opaque.reads, opaque.binds) == ({"get_ipython"}, frozenset())
    cache = DataflowCache(cell_magics={"mymagic"})
    flow = cache.get(source_sha256(source), source)
    assert flow is not None
    assert flow.binds == {"x"}


def test_cell_magic_body_with_syntax_error_is_opaque() -> None:
    """A known cell magic with a non-Python body reads only get_ipython and its line's names."""
    empty: frozenset[str] = frozenset()
    assert analyze("%%time\nx = (\n") == CellDataflow(frozenset({"get_ipython"}), empty, empty)
    flow = analyze("%%provrun --tag {tag}\nx = (\n")
    assert flow is not None
    assert flow.reads == {"get_ipython", "tag"}


def test_line_magic_code_with_syntax_error_is_ignored() -> None:
    """`%time <not python>` still leaves the rest of the cell analysable."""
    flow = analyze("%time -n1 (\ny = x\n")
    assert flow is not None
    assert (flow.reads, flow.binds) == ({"get_ipython", "x"}, {"y"})


# -- malformed, huge and hostile input ------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "x = (\n",
        "def f(:\n",
        "  x = 1\n y = 2\n",
        "return = 3\n",
        "x = 1 +\n",
        "class\n",
        "f(**)\n",
        "for x in :\n",
        "x = '\n",
        "\x00",
        "x = 1\x00\n",
        "(" * 300 + ")" * 300,
        "x = " + "-" * 100_000 + "1",
        "\udcff = 1\n",
    ],
)
def test_not_python_is_none(source: str) -> None:
    """Syntax errors, null bytes, parser limits and surrogates in names give None."""
    assert analyze(source) is None


def test_surrogate_escapes_in_strings_and_comments() -> None:
    """Surrogate escapes in strings and comments do not stop the analysis."""
    raw = b"label = '\xff\xfe caf\xe9'  # \xe9t\xe9\ny = label + suffix\n"
    source = raw.decode("utf-8", "surrogateescape")
    assert "\udcff" in source
    flow = analyze(source)
    assert flow is not None
    assert (flow.reads, flow.binds) == ({"suffix"}, {"label", "y"})


def test_unicode_identifiers_are_normalized() -> None:
    """Names are NFKC-normalised as Python does (`ﬁle` and `file` are one name)."""
    flow = analyze("ﬁle = 1\nµ = ﬁle + file\n")
    assert flow is not None
    assert flow.binds == {"file", "μ"}
    assert flow.reads == frozenset()


def test_invalid_escape_warnings_are_not_repeated() -> None:
    """Parsing a cell does not emit the cell's own SyntaxWarnings/DeprecationWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow = analyze("pattern = '\\d+'\nok = x is 1\n")
    assert flow is not None
    assert flow.binds == {"pattern", "ok"}


class _Calls:
    """Counts of the costly steps of an analysis (`ast.parse`, IPython's transform), spied on
    inside `jupyter_prov4ml.lineage.dataflow`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parse = 0
        self.transform = 0
        real_parse, real_transform = ast.parse, dataflow._IPythonSyntax.transform

        def parse(*args: Any, **kwargs: Any) -> Any:
            self.parse += 1
            return real_parse(*args, **kwargs)

        def transform(syntax: Any, text: str) -> str | None:
            self.transform += 1
            return real_transform(syntax, text)

        monkeypatch.setattr(dataflow, "ast", SimpleNamespace(**{**vars(ast), "parse": parse}))
        monkeypatch.setattr(dataflow._IPythonSyntax, "transform", transform)


def _cost_ratio(subject: Callable[[], object], baseline: Callable[[], object]) -> float:
    """CPU seconds of `subject` over those of `baseline`, each the best of 7 runs taken in
    turn: the same machine at the same moment, on this thread's CPU clock (time spent waiting
    for a CPU does not count), so the ratio depends neither on the machine's speed nor on its
    load."""
    best = [math.inf, math.inf]
    for _ in range(7):
        for index, function in enumerate((subject, baseline)):
            started = time.thread_time()
            with contextlib.suppress(Exception):
                function()
            best[index] = min(best[index], time.thread_time() - started)
    return best[0] / max(best[1], 1e-9)


def _parse_alone(source: str) -> object:
    """The parse an analysis cannot avoid, as the analysis runs it (collector paused)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source)
    finally:
        if collecting:
            gc.enable()


# The analysis is the parse it cannot avoid plus one walk over the tree: the walk costs about
# a quarter of the parse (benchmarks/bench_dataflow.py). A walk that blew up on some shape
# would cost many times the parse.
WALK_BOUND = 5.0


def test_megabyte_cell_is_refused_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell over MAX_SOURCE_CHARS (pasted data, here 1 MB) is not parsed: None, at once."""
    source = "data = [" + ", ".join(["123456"] * 150_000) + "]\n"
    assert len(source) > MAX_SOURCE_CHARS
    calls = _Calls(monkeypatch)
    assert analyze(source) is None
    assert (calls.parse, calls.transform) == (0, 0)


def test_large_cell_under_the_cap_is_analysed_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cell just under the cap (~90 kB of code) is analysed completely, with one parse (no
    IPython transform) and a walk that costs less than a few parses of it."""
    line = "row_{0} = compute(weights[{0}], bias, scale=0.5)  # generated\n"
    source = "".join(line.format(index) for index in range(1_300))
    assert 0.7 * MAX_SOURCE_CHARS < len(source) < MAX_SOURCE_CHARS
    calls = _Calls(monkeypatch)
    flow = analyze(source)
    assert (calls.parse, calls.transform) == (1, 0)
    monkeypatch.undo()
    assert flow is not None
    assert flow.reads == {"compute", "weights", "bias"}
    assert len(flow.binds) == 1_300
    assert _cost_ratio(lambda: analyze(source), lambda: _parse_alone(source)) < WALK_BOUND


def test_long_flat_expression_is_walked_without_recursion() -> None:
    """A 2,000-term sum (a 2,000-deep tree) is analysed: the expression walk is iterative."""
    flow = analyze("x = " + " + ".join(f"a{i % 7}" for i in range(2000)) + "\n")
    assert flow is not None
    assert flow.reads == {f"a{i}" for i in range(7)}


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "+".join(["a"] * 100_000),
        "x = a" + ".b" * 100_000,
        "x = f" + "()" * 50_000,
        "f = " + "lambda: " * 3000 + "y",
        "x = " + "[" * 190 + "]" * 190,
        "x = " + "[y for y in " * 150 + "z" + "]" * 150,
        "x = " + "1 if a else " * 10_000 + "2",
    ],
)
def test_deep_nesting_never_raises_and_is_bounded(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pathologically nested expressions give a result or None, never an exception, fast:
    one parse at most (none over the cap), no IPython transform, and a walk that costs less
    than a few parses of the same text."""
    under_the_cap = len(source) <= MAX_SOURCE_CHARS
    calls = _Calls(monkeypatch)
    flow = analyze(source)
    assert (calls.parse, calls.transform) == (1 if under_the_cap else 0, 0)
    monkeypatch.undo()
    assert flow is None or isinstance(flow, CellDataflow)
    if under_the_cap:
        assert _cost_ratio(lambda: analyze(source), lambda: _parse_alone(source)) < WALK_BOUND


def test_gc_state_is_restored() -> None:
    """The collector, paused while the AST is built, is re-enabled only if it was enabled."""
    assert gc.isenabled()
    analyze("x = y\n")
    assert analyze("x = (\n") is None
    assert gc.isenabled()
    gc.disable()
    try:
        analyze("x = y\n")
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- the cache -------------------------------------------------------------------------------


def test_cache_returns_the_memoised_result() -> None:
    """A repeated cell is one lookup: the same object comes back, and the source is not read."""
    cache = DataflowCache()
    source = "x = y\n"
    sha = source_sha256(source)
    first = cache.get(sha, source)
    assert first == analyze(source)
    assert cache.get(sha, "this is not even looked at") is first
    assert len(cache) == 1


def test_cache_memoises_failures_too() -> None:
    """A cell that does not parse is analysed once, not at every run."""
    cache = DataflowCache()
    calls = []
    original = cache.analyze

    def counting(source: str) -> CellDataflow | None:
        calls.append(source)
        return original(source)

    cache.analyze = counting  # type: ignore[method-assign]
    for _ in range(3):
        assert cache.get("bad", "x = (\n") is None
    assert calls == ["x = (\n"]


def test_cache_is_a_bounded_lru() -> None:
    """The cache keeps at most max_entries, evicting the least recently used first."""
    cache = DataflowCache(max_entries=3)
    for name in "abc":
        cache.get(name, f"{name} = 1\n")
    cache.get("a", "a = 1\n")  # a is now the most recent
    cache.get("d", "d = 1\n")  # evicts b
    assert len(cache) == 3
    assert cache.get("b", "changed = 1\n") == analyze("changed = 1\n")
    flow = cache.get("a", "ignored")
    assert flow is not None
    assert flow.binds == {"a"}


def test_cache_builds_one_transformer_and_only_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """IPython's TransformerManager is built once per cache, and not at all for plain cells."""
    import IPython.core.inputtransformer2 as transformers

    built = []
    original = transformers.TransformerManager

    def counting_manager() -> Any:
        built.append(1)
        return original()

    monkeypatch.setattr(transformers, "TransformerManager", counting_manager)
    cache = DataflowCache()
    plain = "import numpy as np\nx = np.ones(3) % 2\ny = x != 1\n"
    cache.get(source_sha256(plain), plain)
    assert built == []
    for index, source in enumerate(["%matplotlib inline\n", "!ls\n", "x = !ls\n", "y?\n"]):
        flow = cache.get(str(index), source)
        assert flow is not None
        assert "get_ipython" in flow.reads
    assert built == [1]


def test_magic_cell_analysis_matches_its_body() -> None:
    """`%%time` + body reads and binds what the body does, plus get_ipython."""
    body = "import os\nfor f in os.listdir(root):\n    sizes[f] = os.path.getsize(f)\n"
    plain = analyze(body)
    assert plain is not None
    expected = CellDataflow(plain.reads | {"get_ipython"}, plain.binds, plain.deletes)
    assert analyze("%%time\n" + body) == expected
    assert analyze("%%provrun\n" + body) == expected


# -- IPython's own tree ----------------------------------------------------------------------


def _sources() -> list[str]:
    return [case.values[0] for case in CORPUS] + EXECUTABLE


def test_ipythons_tree_gives_the_same_dataflow(shell: Any) -> None:
    """Walking IPython's own tree of each corpus cell gives what analysing its source does."""
    capture = CellTreeCapture()
    capture.attach(shell.compile)
    compared = 0
    try:
        for index, source in enumerate(_sources()):
            capture.clear()
            # IPython's own pipeline up to execution: transform, parse, AST transformers.
            code = shell.transform_cell(source)
            tree = shell.transform_ast(shell.compile.ast_parse(code))
            assert capture.take() is tree
            cache = DataflowCache()
            assert cache.get(str(index), source, tree) == analyze(source), source
            compared += 1
    finally:
        capture.detach()
    assert compared == len(CORPUS) + len(EXECUTABLE)


def test_tree_capture_in_a_running_shell(shell: Any) -> None:
    """In a real shell the capture keeps the cell's tree, not a nested run_cell's; a cell that
    does not parse leaves none; `detach` gives the compiler back its own `ast_parse`."""
    capture = CellTreeCapture()
    capture.attach(shell.compile)
    source = "a = 1\nget_ipython().run_cell('inner = 2')\nb = a + c\n"
    capture.clear()
    shell.run_cell(source)
    tree = capture.take()
    assert tree is not None
    flow = DataflowCache().get(source_sha256(source), source, tree)
    assert flow is not None
    assert (flow.reads, flow.binds) == ({"get_ipython", "c"}, {"a", "b"})
    assert capture.take() is None
    capture.clear()
    shell.run_cell("x = (\n")
    assert capture.take() is None
    capture.wanted = False
    shell.run_cell("y = 1\n")
    assert capture.take() is None
    capture.detach()
    assert "ast_parse" not in vars(shell.compile)


def test_tree_capture_adds_no_ast_transformer(loaded: Any) -> None:
    """Any AST transformer makes IPython walk the whole tree of every cell: the tree is taken
    from the compiler, and the extension leaves `ast_transformers` as it found it; unloading
    gives the compiler back its own `ast_parse`, and the cells still get their lineage."""
    probe = "seen = [type(t).__name__ for t in get_ipython().ast_transformers]"
    loaded.run_cell(probe, store_history=True)
    assert loaded.user_ns["seen"] == []
    assert "ast_parse" in vars(loaded.compile)
    loaded.run_cell("first = 1", store_history=True)
    loaded.run_cell("second = first + 1", store_history=True)
    lineage = loaded._jupyter_prov4ml.recorder.lineage
    assert "first" in lineage.last_binder and "second" in lineage.last_binder
    loaded.run_line_magic("unload_ext", "jupyter_prov4ml")
    assert "ast_parse" not in vars(loaded.compile)


def test_tree_path_keeps_the_size_cap() -> None:
    """A cell over the cap is not analysed even when its tree is at hand."""
    source = "x = 1\n"
    cache = DataflowCache(max_source_chars=3)
    assert cache.get("sha", source, ast.parse(source)) is None


# -- soundness against execution -------------------------------------------------------------


class _RecordingNamespace(dict[str, Any]):
    """A user namespace that records which names the code read from before it ran."""

    def __init__(self, before: dict[str, Any]) -> None:
        super().__init__(before)
        self.original = set(before)
        self.read_from_before: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        if name in self.original:
            self.read_from_before.add(name)
        return super().__getitem__(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.original.discard(name)
        super().__setitem__(name, value)

    def __delitem__(self, name: str) -> None:
        self.original.discard(name)
        super().__delitem__(name)


EXECUTABLE = [
    "total = 0\nfor v in values:\n    total += v * scale\n",
    "def f(x):\n    return x * scale\nys = [f(v) for v in values]\n",
    "if flag:\n    out = 1\nprint_ = out\n",
    "class A:\n    k = scale\n    def m(self):\n        return values\nA().m()\n",
    "try:\n    r = 1 / zero\nexcept ZeroDivisionError as err:\n    r = str(err)\n",
    "data = {k: scale for k in values}\ndel data\nz = [w for w in values if w > cut]\n",
    "import math as m\nq = m.sqrt(scale)\nmatched = None\n"
    "match values:\n    case [a, *rest]:\n        matched = a\n",
    "fn = lambda: scale + out\nres = fn()\n",
    "n = 0\nwhile n < cut:\n    n += 1\nwith ctx as c:\n    got = c\n",
    "if (m := max(values)) > cut:\n    big = [v for v in values if v == m]\n",
]


@pytest.mark.parametrize("source", EXECUTABLE)
def test_static_reads_cover_what_execution_reads(source: str) -> None:
    """Executing the cell reads, adds and removes no name the analysis does not report."""
    before = {
        "values": [3, 1, 2],
        "scale": 2.0,
        "flag": True,
        "out": 7,
        "zero": 0,
        "cut": 2,
        "err": "old",
        "ctx": contextlib.nullcontext(5),
    }
    namespace = _RecordingNamespace(before)
    exec(compile(source, "<cell>", "exec"), namespace)
    flow = analyze(source)
    assert flow is not None
    assert namespace.read_from_before <= flow.reads
    after = set(namespace) - {"__builtins__"}
    assert after - set(before) <= flow.binds
    assert set(before) - after <= flow.deletes


# -- properties -------------------------------------------------------------------------------

_FRAGMENTS = [
    "x = y\n",
    "a, *b = c\n",
    "def f(p=q):\n    return p + r\n",
    "    s = t\n",
    "class K(B):\n    u = v\n",
    "for i in xs:\n",
    "    total += i\n",
    "if (w := z):\n",
    "    pass\n",
    "else:\n",
    "[e for e in es if g]\n",
    "lambda h: h + k\n",
    "import m.n as o\n",
    "from p import *\n",
    "del x\n",
    "global gg\n",
    "try:\n",
    "except E as err:\n",
    "with cm as c:\n",
    "match x:\n    case [m1, *m2]:\n        pass\n",
    "%time tt = uu\n",
    "%%time\n",
    "!ls {dd} $ee\n",
    "vv = !ls\n",
    "ww?\n",
    "f'{ff}'\n",
    "(",
    ")",
    ":",
    "'",
    "\\",
    "\n",
    "    ",
]


def _assert_names_come_from(flow: CellDataflow | None, source: str) -> None:
    if flow is None:
        return
    normalized = unicodedata.normalize("NFKC", source)
    for name in flow.reads | flow.binds | flow.deletes:
        assert name == "get_ipython" or name in source or name in normalized, name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(source: str) -> None:
    """Any text gives a CellDataflow or None, naming only identifiers from the source."""
    flow = analyze(source)
    assert flow is None or isinstance(flow, CellDataflow)
    _assert_names_come_from(flow, source)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=14))
def test_never_raises_on_code_like_text(fragments: list[str]) -> None:
    """Cells of Python/IPython fragments never raise and name only their own identifiers."""
    source = "".join(fragments)
    flow = analyze(source)
    assert flow is None or isinstance(flow, CellDataflow)
    _assert_names_come_from(flow, source)
    if flow is not None:
        identifiers = set(re.findall(r"[A-Za-z_]\w*", source)) | {"get_ipython"}
        assert flow.reads | flow.binds <= identifiers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=14))
def test_tree_path_agrees_with_source_path(fragments: list[str]) -> None:
    """Where IPython parses a cell, the tree path and the source path agree."""
    from IPython.core.inputtransformer2 import TransformerManager

    source = "".join(fragments)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return
    assert DataflowCache().get("sha", source, tree) == analyze(source)


_STRAIGHT_LINES = [
    "x = 1\n",
    "y = f(x)\nx += 1\n",
    "print(a.b[c], *d, key=e)\n",
    "n += n\nm = n\n",
    "a = b = c\n",
    "t = (u, [v, {w: q, **r}], {s}, -z if k else j)\n",
    "f'{ff!r:>{width}}'\n",
    "lo = xs[1:hi:step]\n",
]


@pytest.mark.parametrize("source", [*_STRAIGHT_LINES, *EXECUTABLE, *(p.values[0] for p in CORPUS)])
def test_straight_line_cells_agree_with_the_walker(source: str) -> None:
    """The one-loop analysis of plain assignment and expression cells gives the walker's
    answer, and declines every other cell (the corpus holds each kind of statement)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    fast = dataflow._straight_line_flow(tree.body)
    walker = dataflow._CellWalker(DEFAULT_CELL_MAGICS, dataflow._IPythonSyntax())
    walker.block(tree.body, walker.module)
    if source in _STRAIGHT_LINES:
        assert fast is not None
    if fast is not None:
        assert fast == walker.result()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                "x = y\n",
                "y += x\n",
                "z = x + w\n",
                "print(z, v.u)\n",
                "w = v = f(w)\n",
                "(lambda: x)()\n",
                "q = [x for x in y]\n",
                "get_ipython().run_line_magic('time', 'x')\n",
                "a, b = x, y\n",
                "del x\n",
            ]
        ),
        max_size=8,
    )
)
def test_straight_line_analysis_never_disagrees(lines: list[str]) -> None:
    """Mixed cells: whenever the one-loop analysis answers, it is the walker's answer."""
    tree = ast.parse("".join(lines))
    fast = dataflow._straight_line_flow(tree.body)
    walker = dataflow._CellWalker(DEFAULT_CELL_MAGICS, dataflow._IPythonSyntax())
    walker.block(tree.body, walker.module)
    if fast is not None:
        assert fast == walker.result()
