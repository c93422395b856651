"""Credentials in stored cell sources: each way code commonly carries one is redacted, and
ordinary code is stored as written."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_prov4ml.redaction import (
    REDACTED,
    is_secret_name,
    looks_like_credential,
    redact_json,
    redact_source,
    redact_text,
    redact_value,
)

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
        # credential-named keys inside nested values
        f'config = {{"lr": 0.1, "db_password": "{SECRET}"}}',
        f'log_param("s", {{"db": {{"password": "{SECRET}"}}}})',
        # positional credentials
        f'requests.get(url, auth=("bob", "{SECRET}"))',
        f'auth = ("bob", "{SECRET}")',
        f'session.auth = ["bob", "{SECRET}"]',
        f'requests.get(url, auth=HTTPBasicAuth("bob", "{SECRET}"))',
        f'requests.get(url, auth=requests.auth.HTTPDigestAuth(\n    "bob",\n    "{SECRET}",\n))',
        f'smtp.login("me@example.org", "{SECRET}")',
        f'keyring.set_password("svc", "bob", "{SECRET}")',
        # shell escapes: curl-, mysql-, sshpass-, docker-style credentials
        f"!curl -u bob:{SECRET} https://example.org",
        f"!curl --user bob:{SECRET} https://example.org",
        f"!curl --user=bob:{SECRET} https://example.org",
        f"!curl -u 'bob:{SECRET}' https://example.org",
        f'!curl -H "Authorization: Basic {SECRET}" https://example.org',
        f"!mysql -u root -p{SECRET} runs",
        f"!mysql -u root -p'{SECRET}' runs",
        f"!mysql -u root -p '{SECRET}' runs",
        f"!mysqldump --password={SECRET} runs",
        f"!mysql --password {SECRET} runs",
        f"!sshpass -p {SECRET} ssh host",
        f"!docker login -u bob -p {SECRET} registry.example.org",
        f"!redis-cli -a {SECRET} -p 6379 ping",
        f"!wget --http-password={SECRET} https://example.org/f",
        f"!openssl enc -aes256 -pass pass:{SECRET} -in f",
        f"!huggingface-cli login --token {SECRET}",
        f"%%bash\nmysql -u root -p{SECRET} -e 'select 1'",
        f"files = !curl -s --user bob:{SECRET} https://example.org",
        f'os.system("mysql -u root -p{SECRET} runs")',
        f'subprocess.run(["curl", "-u", "bob:{SECRET}", url])',
        f'subprocess.run(["mysql", "-u", "root", "-p{SECRET}"])',
        f'subprocess.run(["sshpass", "-p", "{SECRET}", "ssh", "host"])',
        f'subprocess.run(["mysql", "--password", "{SECRET}"])',
        # URL passwords holding `/`, `@` or `:`
        'url = "postgresql://bob:open/sesame@1a2b@db.example.org:5432/runs"',
        'url = "mongodb+srv://bob:open:sesame/1a2b@cluster.example.org/db"',
        # short names
        f'pw = "{SECRET}"',
        f'pwd = "{SECRET}"',
        f'db_pass = "{SECRET}"',
        f'MYSQL_PWD = "{SECRET}"',
        f'dbPass = "{SECRET}"',
        f'creds = "{SECRET}"',
        f'd["pw"] = "{SECRET}"',
        f'connect(host="h", pw="{SECRET}")',
        f'log_param("pass", "{SECRET}")',
        f"%env DB_PW {SECRET}",
        # a PEM private key in any string
        f'pem = """-----BEGIN RSA PRIVATE KEY-----\nMII{SECRET}\n-----END RSA PRIVATE KEY-----"""',
        # a known token format in a comment
        "# ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5",
    ],
)
def test_secret_is_redacted_from_source(source: str) -> None:
    """The secret is gone and the redaction marker is in its place; redacting again changes
    nothing (recovery and exports redact what the store holds once more)."""
    stored = redact_source(source)
    assert SECRET not in stored
    for piece in ("open/sesame", "open:sesame", "sesame@1a2b", "ghp_aB3dE5"):
        assert piece not in stored
    assert REDACTED in stored
    assert redact_source(stored) == stored


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
        "!mkdir -p data/raw\n!ssh -p 2222 host ls\n!docker run -p 8080:80 image",
        "!curl -u bob https://example.org",
        "y = -lr * grad\nx = a[-u:]\nz = b --c",
        'parser.add_argument("-p", "--port", default=8080)',
        'model = hf_hub_download("gpt2", filename="config.json")',
        'tokens = tokenizer("hello world", return_tensors="pt")',
        'url = "https://medium.com:443/@user/post"',
        'd["key"] = "value"',
        "try:\n    f()\nexcept OSError:\n    pass\nbypass = 'fine'\ncompass = 'north'",
        "for pw in range(3):\n    print(pw)",
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


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("pw", True),
        ("PW", True),
        ("pwd", True),
        ("pass", True),
        ("db_pass", True),
        ("MYSQL_PWD", True),
        ("user_pw2", True),
        ("dbPass", True),
        ("userPW", True),
        ("creds", True),
        ("passphrase", True),
        ("bypass", False),
        ("compass", False),
        ("pass_rate", False),
        ("pw_scale", False),
        ("password_hint", True),
        ("keys", False),
    ],
)
def test_short_credential_names(name: str, secret: bool) -> None:
    """`pw`, `pwd`, `pass`, `creds` name a credential as a name's last word (snake, kebab
    or camel case); words that merely contain them do not."""
    assert is_secret_name(name) is secret


def test_redact_text_hides_bare_credentials_in_free_text() -> None:
    """Output, logs and text files: tokens not in quotes, `Authorization:` values, PEM
    blocks, `key: value` lines, URL passwords; a path with mixed case and digits is kept."""
    token = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"
    text = (
        f"logged in with {token}\n"
        "Authorization: Bearer abcdefgh12345678\n"
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n-----END OPENSSH PRIVATE KEY-----\n"
        "password: opensesame\n"
        "db: postgresql://bob:open/sesame@db.example.org/x\n"
        "saved /Users/Alice/Projects2024/model.pt\n"
    )
    redacted = redact_text(text)
    for secret in (token, "abcdefgh12345678", "b3BlbnNzaC1r", "opensesame", "open/sesame"):
        assert secret not in redacted
    assert "saved /Users/Alice/Projects2024/model.pt" in redacted


def test_redact_json_hides_what_a_credential_named_object_says() -> None:
    """In a PROV-JSON document (or any JSON) an object named like a credential keeps no
    value, description or hash; scalars under credential-named keys and credential-shaped
    strings are redacted; code under `source` is redacted as code; the shape is kept."""
    document = {
        "entity": {
            "p4m:var_r1_pw": {
                "p4m:name": "pw",
                "p4m:description": "7 characters",
                "p4m:value_sha256": "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3",
                "prov:type": "p4m:Variable",
            },
            "p4m:param_r1_x": {"p4m:name": "x", "p4m:value": "mysql -popensesame db"},
            "p4m:cell_1": {"p4m:source": 'pw = "opensesame"\nm = hf_hub_download("gpt2")'},
            "p4m:param_r1_k": {"p4m:name": "api_key", "p4m:value": {"$": "3", "type": "xsd:int"}},
        }
    }
    redacted = redact_json(document)
    entity = redacted["entity"]
    assert entity["p4m:var_r1_pw"]["p4m:value_sha256"] == REDACTED
    assert entity["p4m:var_r1_pw"]["p4m:description"] == REDACTED
    assert entity["p4m:var_r1_pw"]["prov:type"] == "p4m:Variable"
    assert entity["p4m:param_r1_x"]["p4m:value"] == "mysql -p<redacted> db"
    assert entity["p4m:cell_1"]["p4m:source"] == f'pw = "{REDACTED}"\nm = hf_hub_download("gpt2")'
    assert entity["p4m:param_r1_k"]["p4m:value"] == REDACTED
    assert redact_json(redacted) == redacted


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pw", "hunter2"),
        ("pwd", b"hunter2"),
        ("cmd", "mysql -u root -phunter2 db"),
        ("curl", "curl --user bob:hunter2 https://example.org"),
        ("config_text", "db_password: hunter2\nhost: db"),
        ("url", "postgresql://bob:hun/ter@2@db.example.org/x"),
        ("raw", b"Authorization: Basic hunter2"),
    ],
)
def test_a_redacted_variable_leaves_no_hash(name: str, value: object) -> None:
    """A variable whose name is a credential's, or whose text holds what redaction hides,
    is summarised as `<redacted>` with no sha256 (a short password's hash is one dictionary
    lookup away)."""
    from jupyter_prov4ml.lineage.links import summarize

    summary = summarize(name, value)
    assert summary.value_sha256 is None and summary.description == REDACTED
    assert summarize("note", "a plain sentence").value_sha256 is not None


@pytest.mark.parametrize(
    "piece",
    ["auth=(", 'login("a", ', "auth = (''' x ", "postgresql://a:b@", "mysql -p", "key="],
)
def test_redaction_of_pathological_cells_stays_linear(piece: str) -> None:
    """A 100 kB cell made of one piece that opens brackets, strings or URLs it never closes
    is redacted in well under two seconds (the work grows with the cell, not its square)."""
    source = piece * (100_000 // len(piece))
    started = time.perf_counter()
    redact_source(source)
    redact_text(source)
    assert time.perf_counter() - started < 2


_CODE_PIECES = [
    *("auth", "=", "(", ")", "[", "]", "{", "}", '"', "'", "'''", "#", "\n", " ", ","),
    *("-p", "-u", "--password", ":", "@", "/", "://", "mysql", "pw", "x", "Bearer "),
    *("ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5", "%env ", "!"),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_CODE_PIECES), max_size=40) | st.text(max_size=200))
def test_redaction_never_raises(pieces: list[str] | str) -> None:
    """Whatever a cell or a text holds, redacting it returns text (it runs on every cell,
    and on every string an export writes)."""
    text = "".join(pieces)
    assert isinstance(redact_source(text), str)
    assert isinstance(redact_text(text), str)
    assert isinstance(redact_json({"source": text, "name": text, text: [text]}), dict)


def test_redact_json_keeps_references_between_prov_records() -> None:
    """A relation names records by id; ids are never redacted (they are keys), so neither is a
    reference to one, even where the id looks like a token to the text rules (regression: a
    variable `X` of a run made `used` point at `p4m:<redacted>`, an invalid QName). Values
    are still redacted."""
    entity = "p4m:var_20261204T183136-5a49af-00001_X"
    secret = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    document = {
        "entity": {entity: {"p4m:description": secret}},
        "used": {"_:id1": {"prov:activity": "p4m:run_1", "prov:entity": entity}},
    }
    redacted = redact_json(document)
    assert redacted["used"]["_:id1"]["prov:entity"] == entity
    assert entity in redacted["entity"]
    assert secret not in str(redacted)
