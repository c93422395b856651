"""Parameters: `--param NAME=VALUE` parsing and literal top-level assignments, read without
ever evaluating the user's code."""

from __future__ import annotations

import keyword
import math
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_prov4ml.capture.params import (
    ParamError,
    literal_assignments,
    make_param,
    param_text,
    parse_param_option,
)
from jupyter_prov4ml.records import Param
from jupyter_prov4ml.redaction import is_secret_name

# -- parse_param_option ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("lr=0.01", "lr", 0.01),
        ("epochs=3", "epochs", 3),
        ("epochs=-3", "epochs", -3),
        ("scale=1e-3", "scale", 0.001),
        ("big=12345678901234567890", "big", 12345678901234567890),
        ("opt=sgd", "opt", "sgd"),
        ("opt='adam'", "opt", "adam"),
        ('opt="two words"', "opt", "two words"),
        ("opt='  padded  '", "opt", "  padded  "),
        ("msg=hello world", "msg", "hello world"),
        ("  lr  =  0.5  ", "lr", 0.5),
        ("flag=True", "flag", True),
        ("nothing=None", "nothing", None),
        ("lr=", "lr", ""),
        ("expr=1e3*2", "expr", "1e3*2"),
        ("eq=a=b", "eq", "a=b"),
        ("model.lr=0.1", "model.lr", 0.1),
        ("warm-up=5", "warm-up", 5),
        ("_private=1", "_private", 1),
        ("shape=(3, 4)", "shape", "(3, 4)"),
        ("inf=1e999", "inf", "inf"),
        ("z=1j", "z", "1j"),
    ],
)
def test_parse_param_option_values(text: str, name: str, value: object) -> None:
    """Values are Python scalar literals where they parse (containers as text), else the text."""
    param = parse_param_option(text)
    assert param == Param(name, value, "magic")
    assert type(param.value) is type(value)


@pytest.mark.parametrize("text", ["lr", "", "lr 0.01", "lr:0.01"])
def test_parse_param_option_without_equals(text: str) -> None:
    """A `--param` without `=` is a ParamError naming the expected NAME=VALUE form."""
    with pytest.raises(ParamError, match="NAME=VALUE"):
        parse_param_option(text)


@pytest.mark.parametrize("text", ["=3", " =3", "1lr=3", "l r=3", "lr!=3", "ñ?=1", "$x=1", "a/b=2"])
def test_parse_param_option_bad_names(text: str) -> None:
    """A name that is not an identifier (dots and dashes allowed) is a ParamError."""
    with pytest.raises(ParamError, match="not an identifier"):
        parse_param_option(text)


def test_parse_param_option_never_evaluates(tmp_path: Path) -> None:
    """Code given as a value is kept as text and never run."""
    marker = tmp_path / "pwned"
    text = f"lr=__import__('os').system('touch {marker}')"
    param = parse_param_option(text)
    assert param.value == text.partition("=")[2]
    assert not marker.exists()


# -- literal_assignments --------------------------------------------------------------------


def test_literal_assignments_plain_and_annotated() -> None:
    """Plain and annotated top-level assignments of literals are found, in order, typed."""
    source = (
        "batch_size = 64\n"
        "lr: float = 1e-3\n"
        "name = 'resnet'\n"
        "use_amp = False\n"
        "seed = None\n"
        "momentum = -0.9\n"
        "layers = [64, 128]\n"
    )
    assert literal_assignments(source) == [
        Param("batch_size", 64, "literal"),
        Param("lr", 0.001, "literal"),
        Param("name", "resnet", "literal"),
        Param("use_amp", False, "literal"),
        Param("seed", None, "literal"),
        Param("momentum", -0.9, "literal"),
        Param("layers", "[64, 128]", "literal"),
    ]


def test_literal_assignments_unpacks_tuples() -> None:
    """`lr, seed = 0.3, 0` binds two parameters, item by item."""
    assert literal_assignments("lr, seed = 0.3, 0\n[x, y] = ['a', None]\n") == [
        Param("lr", 0.3, "literal"),
        Param("seed", 0, "literal"),
        Param("x", "a", "literal"),
        Param("y", None, "literal"),
    ]


def test_literal_assignments_ignores_what_is_not_a_simple_literal_binding() -> None:
    """Attributes, subscripts, bare annotations, augmented and nested assignments, starred or
    mismatched unpacking and non-literal values are all ignored (and `total`, augmented,
    is an accumulator, not a parameter)."""
    source = (
        "a, *b = 1, 2, 3\n"
        "(c, d) = (3, 4, 5)\n"
        "e, f = g\n"
        "obj.attr = 6\n"
        "table['k'] = 7\n"
        "self.x: int = 8\n"
        "declared: int\n"
        "total = 0\n"
        "total += 9\n"
        "x = f()\n"
        "y = 2 * 3\n"
        "z = some_name\n"
        "w = [i for i in range(3)]\n"
        "blob = b'bytes'\n"
        "cplx = 1j\n"
        "def g():\n"
        "    inner = 10\n"
        "if True:\n"
        "    nested = 11\n"
        "for i in range(1):\n"
        "    looped = 12\n"
    )
    assert literal_assignments(source) == []


def test_literal_assignments_chained_targets() -> None:
    """`a = b = 1` records both names."""
    assert literal_assignments("a = b = 1\n") == [
        Param("a", 1, "literal"),
        Param("b", 1, "literal"),
    ]


def test_literal_assignments_last_one_wins() -> None:
    """A name assigned twice keeps the last literal, placed where it was last assigned."""
    source = "lr = 0.1\nepochs = 3\nlr = 0.01\n"
    assert literal_assignments(source) == [
        Param("epochs", 3, "literal"),
        Param("lr", 0.01, "literal"),
    ]


def test_literal_assignments_rebinding_to_non_literal_keeps_the_literal() -> None:
    """A later non-literal binding of the same name does not remove the earlier literal."""
    assert literal_assignments("lr = 0.1\nlr = compute()\n") == [Param("lr", 0.1, "literal")]


@pytest.mark.parametrize(
    "source",
    [
        "%time x = 1",
        "!ls\nx = 1",
        "x = 1\n%matplotlib inline",
        "x = 1\nfiles = !ls",
        "x = 1\nx?",
        "x = (1",
        "x = 1\n  y = 2",
        "x = 1\x00",
        "def f(:\n",
    ],
)
def test_literal_assignments_unparsable_source_yields_nothing(source: str) -> None:
    """IPython syntax and syntax errors give an empty list, never an exception."""
    assert literal_assignments(source) == []


def test_literal_assignments_one_megabyte_source_is_quick() -> None:
    """A 1 MB cell returns at once; one just under the 100 kB limit is handled within 2 s."""
    huge = "".join(f"a{i} = {i}\n" for i in range(120_000))
    assert len(huge) > 1 << 20
    start = time.perf_counter()
    assert literal_assignments(huge) == []
    assert time.perf_counter() - start < 0.1
    below = "".join(f"a{i} = {i}\n" for i in range(7_000))
    assert 80_000 < len(below) < 100_000
    start = time.perf_counter()
    found = literal_assignments(below)
    assert time.perf_counter() - start < 2
    assert len(found) == 7_000 and found[-1] == Param("a6999", 6999, "literal")


@pytest.mark.parametrize(
    "value",
    [
        "-" * 100_000 + "1",
        "1" + "+1" * 100_000,
        "(" * 1_000 + "1" + ")" * 1_000,
        "[" * 300 + "]" * 300,
        "{'a': " * 150 + "1" + "}" * 150,
        "1" + "0" * 5_000,
    ],
)
def test_literal_assignments_deep_or_huge_expressions_do_not_raise(value: str) -> None:
    """Deeply nested or enormous expressions are skipped, never a RecursionError or crash."""
    params = literal_assignments(f"before = 1\nx = {value}\nafter = 2\n")
    names = [p.name for p in params]
    assert names in (["before", "after"], [], ["before", "x", "after"])
    for param in params:
        if param.name == "x":
            assert isinstance(param.value, str)


def test_literal_assignments_never_evaluates(tmp_path: Path) -> None:
    """A value that would run code yields no parameter and runs nothing."""
    marker = tmp_path / "pwned"
    source = (
        f"cmd = __import__('os').system('touch {marker}')\n"
        f"other = eval(\"open('{marker}', 'w')\")\n"
        "safe = 1\n"
    )
    assert literal_assignments(source) == [Param("safe", 1, "literal")]
    assert not marker.exists()


# -- properties -----------------------------------------------------------------------------

_identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name)
)
_scalars = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_literal_assignments_never_raises_on_any_text(source: str) -> None:
    """For arbitrary text the result is a list of literal Params with identifier names."""
    params = literal_assignments(source)
    assert isinstance(params, list)
    for param in params:
        assert param.source == "literal" and param.name.isidentifier()
        assert isinstance(param.value, str | int | float | bool | type(None))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["x = 1\n", "y: int = 2\n", "%%", "!", "(", "'", "\\", "\n"])))
def test_literal_assignments_never_raises_on_code_like_text(pieces: list[str]) -> None:
    """Text built from code fragments never makes it raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(literal_assignments("".join(pieces)), list)


def test_literal_assignments_adds_no_warnings_of_its_own() -> None:
    """Reading a cell's literals does not repeat the warnings Python gives for the cell."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = literal_assignments('pattern = "\\d+"\n')
    assert params == [Param("pattern", "\\d+", "literal")]
    assert [str(w.message) for w in caught] == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_identifiers, _scalars), min_size=1, max_size=8))
def test_literal_assignments_round_trip(pairs: list[tuple[str, object]]) -> None:
    """`name = repr(value)` lines are read back as exactly those values, last one winning."""
    source = "".join(f"{name} = {value!r}\n" for name, value in pairs)
    expected: dict[str, object] = {}
    for name, value in pairs:
        expected.pop(name, None)
        expected[name] = value
    found = literal_assignments(source)
    assert [(p.name, p.value) for p in found] == [
        (name, "<redacted>" if is_secret_name(name) else value) for name, value in expected.items()
    ]
    for param, (name, value) in zip(found, expected.items(), strict=True):
        assert is_secret_name(name) or type(param.value) is type(value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_parse_param_option_raises_only_param_error(text: str) -> None:
    """For arbitrary text the result is a valid magic Param, or a ParamError — nothing else."""
    try:
        param = parse_param_option(text)
    except ParamError:
        return
    assert "=" in text and param.source == "magic"
    assert param.name == text.partition("=")[0].strip() and param.name
    assert isinstance(param.value, str | int | float | bool | type(None))
    if isinstance(param.value, float):
        assert math.isfinite(param.value)


@settings(max_examples=300, deadline=None)
@given(_identifiers, _scalars)
def test_parse_param_option_round_trip(name: str, value: object) -> None:
    """`NAME=repr(value)` gives back the name and the value with its type (redacted, for a
    name like a credential's)."""
    param = parse_param_option(f"{name}={value!r}")
    if is_secret_name(name):
        assert param == Param(name, "<redacted>", "magic")
        return
    assert param == Param(name, value, "magic")
    assert type(param.value) is type(value)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_sources_with_code_values_are_never_run(payload: str) -> None:
    """Whatever is wrapped in a call, nothing is recorded for it (so nothing could run)."""
    source = f"x = __import__('os').system({payload!r})\n"
    assert literal_assignments(source) == []


# -- what a parameter is (README: "Literal parameters") ----------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("acc = 0.0\nfor batch in batches:\n    acc += loss(batch)\n", "acc"),
        ("total = 0\ntotal = total + 1\n", "total"),
        ("mine = [1]\nfor x in xs:\n    mine.append(x)\n", "mine"),
        ("seen = {'a'}\nseen.add('b')\n", "seen"),
        ("cfg = {'lr': 0.1}\ncfg['lr'] = 0.2\n", "cfg"),
        ("cfg = {'opt': {'lr': 0.1}}\ncfg['opt']['lr'] *= 2\n", "cfg"),
        ("counts = {'a': 1}\ncounts.update(b=2)\n", "counts"),
        ("best = None\nfor m in models:\n    if m.score > 0:\n        best = m\n", "best"),
        ("i = 0\nfor i in range(3):\n    pass\n", "i"),
        ("step = 0\nwhile step < 3:\n    step = step + 1\n", "step"),
        ("n = 0\ndef bump():\n    global n\n    n += 1\n", "n"),
        ("x = 5\ndel x\n", "x"),
        ("mine = []\n", "mine"),
        ("table = {}\n", "table"),
        ("empty = ()\n", "empty"),
        ("a, mine = 1, []\n", "mine"),
    ],
)
def test_working_state_and_empty_initialisers_are_not_parameters(source: str, name: str) -> None:
    """Accumulators (`acc += …`, `acc = acc + …`), names changed in place (`mine.append`,
    `cfg[k] = …`), rebound in a loop or branch, or as a loop target, deleted, or assigned
    through `global`, and empty containers, are the cell's working state: not parameters."""
    assert name not in {p.name for p in literal_assignments(source)}


def test_hyperparameters_stay_parameters_next_to_working_state() -> None:
    """Zero, empty strings and non-empty containers are parameters when the cell does not
    change them; a function's own local of the same name, or reading the name, changes
    nothing."""
    source = (
        "seed = 0\n"
        "prefix = ''\n"
        "layers = [64, 128]\n"
        "lr = 0.1\n"
        "running = 0.0\n"
        "def schedule(epoch):\n"
        "    lr = 0.5 ** epoch\n"
        "    return lr\n"
        "for epoch in range(3):\n"
        "    running += schedule(epoch) * lr * len(layers) + seed\n"
    )
    assert literal_assignments(source) == [
        Param("seed", 0, "literal"),
        Param("prefix", "", "literal"),
        Param("layers", "[64, 128]", "literal"),
        Param("lr", 0.1, "literal"),
    ]


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ('config = {"lr": 0.1, "db_password": "hunter2x"}', "'lr': 0.1"),
        ('config = {"db": {"host": "h", "pw": "hunter2x"}}', "'host': 'h'"),
        ('hosts = [{"name": "a", "token": "hunter2x"}]', "'name': 'a'"),
        ('pair = ("bob", "Bearer hunter2xhunter2x")', "'bob'"),
    ],
)
def test_credentials_inside_literal_containers_are_redacted(source: str, kept: str) -> None:
    """A literal dict, list or tuple keeps its shape and its other values; what sits under
    a credential's name, or is shaped like one, at any depth, is `<redacted>`."""
    (param,) = literal_assignments(source)
    assert isinstance(param.value, str)
    assert "hunter2x" not in param.value and "<redacted>" in param.value
    assert kept in param.value


class _Plain:
    pass


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (None, None),
        (object(), "<object object>"),
        (_Plain(), f"<{__name__}._Plain object>"),
        (_Plain.__init__, "<slot wrapper '__init__' of 'object' objects>"),
        (len, "<built-in function len>"),
        (lambda: 1, None),  # checked below: no address, whatever the name
        ([object()], "[<object object>]"),
        ({"user": "bob", "password": "hunter2x"}, "{'user': 'bob', 'password': '<redacted>'}"),
        (_Hostile(), "<_Hostile>"),
        (list(range(1000)), "<list>"),
    ],
)
def test_param_text_never_holds_an_address(value: object, expected: object) -> None:
    """What `log_param` stores for any value: scalars as they are, containers and objects as
    text without memory addresses and without credentials, `<Type>` when too long or when
    the repr fails."""
    text = param_text(value)
    if expected is not None or value is None:
        assert text == expected
    assert not isinstance(text, str) or " at 0x" not in text


def test_make_param_strips_addresses_and_redacts_inside_text() -> None:
    """Every parameter passes `make_param`: an address in an object's text is dropped, a
    command line keeps all but its password."""
    obj = make_param("model", "<__main__.Net object at 0x7f3a2c1d5e80>", "api")
    assert obj.value == "<__main__.Net object>"
    cmd = make_param("cmd", "mysql -u root -phunter2x db", "literal")
    assert cmd.value == "mysql -u root -p<redacted> db"
