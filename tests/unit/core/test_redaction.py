"""Credentials in stored cell sources: each way code commonly carries one is redacted, and
ordinary code is stored as written."""

from __future__ import annotations

import time

import pytest

from jupyter_prov4ml.redaction import REDACTED, looks_like_credential, redact_source, redact_value

SECRET = "opensesame-1a2b3c"  # lower-case and short: only its name or its place gives it away


@pytest.mark.parametrize(
    "source",
    [
        f'password = "{SECRET}"',
        f"key = '{SECRET}'",
        f'x = 1\nKEY = "{SECRET}"\n',
        f'token: str = "{SECRET}"',
        f'cfg.api_key="{SECRET}"',
        f'PASSWORD = """{SECRET}"""',
        f'key = """\n{SECRET}\n"""',
        f'password = "open\\"{SECRET}"',
        f'token = "{SECRET}".strip()',
        f'login(user="bob", password="{SECRET}")',
        f'd = dict(secret="{SECRET}")',
        f"x = {{'aws_secret_access_key' : '{SECRET}'}}",
        f'log_param("token", "{SECRET}")',
        f'log_param(name="token", value="{SECRET}")',
        f'os.environ.setdefault("GITHUB_TOKEN", "{SECRET}")',
        f'os.environ["API_KEY"] = "{SECRET}"',
        f"os.environ['MY_PASSWORD']='{SECRET}'",
        f'secrets["db"] = "{SECRET}"',
        f"%env MY_TOKEN={SECRET}",
        f"%env MY_TOKEN {SECRET}",
        f"%set_env MY_TOKEN {SECRET}",
        f"!export GITHUB_TOKEN={SECRET}",
        f"%%provrun --param api_key={SECRET}\npass",
        f'url = "postgresql://bob:{SECRET}@db.example.org/runs"',
        f"!pip install git+https://bob:{SECRET}@git.example.org/r.git",
    ],
)
def test_secret_is_redacted_from_source(source: str) -> None:
    """The secret is gone and the redaction marker is in its place."""
    stored = redact_source(source)
    assert SECRET not in stored
    assert REDACTED in stored


@pytest.mark.parametrize(
    "source",
    [
        "for token, label in pairs:\n    n = len(token)",
        "tokens = tokenizer(text, max_len=5)",
        'api_key = os.getenv("API_KEY")',
        "monkey = 3\nx = a == b",
        'print("hello, world", "and more text here")',
        'url = "https://example.org/x?a=1"',
        'log_param("lr", "0.1 value")',
        "git clone git@github.com:org/repo.git",
        'df = pd.read_csv("data/train.csv")\nmodel.fit(X, y, epochs=3)',
    ],
)
def test_ordinary_code_is_stored_as_written(source: str) -> None:
    """No false alarm on code that only mentions tokens or keys."""
    assert redact_source(source) == source


def test_url_passwords_are_credentials() -> None:
    """A URL with a password is a credential as a parameter value; one without is not."""
    assert looks_like_credential(f"postgresql://bob:{SECRET}@db/x")
    assert not looks_like_credential("https://example.org:443/x")
    assert redact_value("database", f"postgresql://bob:{SECRET}@db/x") == REDACTED


def test_redaction_of_a_large_cell_is_fast() -> None:
    """A 2,000-line cell full of names, strings and keyword arguments redacts in well under
    a quarter of a second (it runs once per executed cell)."""
    line = 'result = model.fit(x_train, y_train, key="value", epochs=3)  # a "comment"\n'
    source = line * 2000
    started = time.perf_counter()
    redact_source(source)
    assert time.perf_counter() - started < 0.25


def test_variables_named_like_credentials_keep_no_trace_of_their_value() -> None:
    """A variable named like a credential, or a string shaped like one, is summarised by
    type only: no value, no hash (a short password's sha256 can be looked up)."""
    from jupyter_prov4ml.lineage.links import summarize

    number = summarize("db_password", 918273)
    text = summarize("api_key", "hunter2")
    shaped = summarize("header", "Bearer abcdefghijklmnopqrstuvwxyz0123456789")
    assert "918273" not in number.description and number.type_name == "int"
    for summary in (number, text, shaped):
        assert summary.value_sha256 is None and summary.description == "<redacted>"
    assert summarize("lr", 0.01).description == "0.01"
