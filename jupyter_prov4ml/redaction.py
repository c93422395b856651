"""Keep credentials out of provenance.

Rules applied to parameters, variables, the stored copy of each cell's source and every file
an export writes:
- by name: the value given to a name that looks like a credential's (`api_key = "…"`,
  `pw = "…"`, `--param token=…`, `{"password": "…"}`, `auth=("bob", "…")`,
  `HTTPBasicAuth("bob", "…")`) is stored as `<redacted>`;
- by command-line flag: `curl -u user:…`, `--user user:…`, `--password …`, `--token=…`,
  `mysql -p…`, `sshpass -p …`, `-p '…'`, in shell escapes, strings and argument lists;
- by value: a string that looks like a credential wherever it appears (known token formats,
  `Bearer …`, PEM private keys, URL passwords, long random-looking mixed-case strings).
The cell's sha256 stays that of the original source, so it still identifies the code that ran.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(
    r"token|secret|passw(?:or)?d|passphrase|api[_-]?key|(?:^|_)key(?:$|_)|credential|auth",
    re.IGNORECASE,
)
# Short names, as a name's last word: `pw`, `db_pass`, `MYSQL_PWD`, `creds`, `pass2`; and as
# the last word of a camelCase name: `dbPass`, `userPW` (not `bypass`, `compass`).
_SHORT_NAME = re.compile(r"(?:^|[_\-.])(?:pw|pwd|pass|psw|pswd|creds?)\d*$", re.IGNORECASE)
_CAMEL_SHORT_NAME = re.compile(r"(?<=[a-z0-9])(?:Pw|PW|Pwd|PWD|Pass|PASS|Creds?|CREDS?)\d*$")
# A cheap first test of a whole cell: could any name in it be a secret's? (`SECRET_NAME`
# anchors `key` to the ends of a name, which a whole source never matches.)
# Matched against the lower-cased source: ~10x faster than an IGNORECASE search.
_SECRET_WORD = re.compile(r"token|secret|pass|pw|key|cred|auth|login")
# A quoted string: triple-quoted (may span lines) or single-line, escapes included.
_QUOTED = (
    r"""[rRbBuUfF]{0,2}(?:(?P<quote>'''|\"\"\")[\s\S]*?(?P=quote)"""
    r"""|(?P<quote1>['"])(?:\\.|[^\\\n])*?(?P=quote1))"""
)
_LITERAL = re.compile(_QUOTED)
# What may hold a secret word: the alternatives every name-based rule starts from.
_NAME_WORDS = r"token|secret|passw|key|credential|auth|pw|pass|cred|login"
# a name, then an optional closing quote and `]` (dict keys, `os.environ["X"]`) or a subscript
# (`secrets["db"]`), then `=`, `:` or `: type =`, then a value: a quoted string or a bare token
# (which stops at `(` and `=`, so `d = dict(secret=…)` still reaches `secret`; a call such as
# `os.getenv(…)` is code, not a secret, and is kept).
_ASSIGNMENT = re.compile(
    # only a name holding a secret word can match: scanning stays fast on long cells
    r"""(?<![A-Za-z0-9_\-])(?=[A-Za-z_])"""
    rf"""(?P<name>(?i:[A-Za-z0-9_\-]*?(?:{_NAME_WORDS}))[A-Za-z0-9_\-]*)"""
    r"""(?P<close>['"]?\]?|\[[^\]\n]*\])"""
    r"""(?P<sep>\s*(?::\s*[A-Za-z_][\w\[\], .]*\s*)?=\s*|\s*:\s*)"""
    rf"""(?P<value>{_QUOTED}|[^\s,()}}\]#'"=]+(?![^\s,()}}\]#'"=]*\())"""
)
# A name followed by a bracket: `auth=(user, "…")`, `"auth": ["…"]`, `creds = {…}` (every
# string in the brackets is redacted), or a call of a credential-taking function, whose
# arguments are positional credentials: `HTTPBasicAuth("bob", "…")`, `smtp.login(u, "…")`.
_BRACKETED = re.compile(
    r"""(?<![A-Za-z0-9_\-])(?=[A-Za-z_])"""
    rf"""(?P<name>(?i:[A-Za-z0-9_\-]*?(?:{_NAME_WORDS}))[A-Za-z0-9_\-]*)"""
    r"""(?P<close>['"]?\]?)"""
    r"""(?P<sep>[ \t]*(?::[ \t]*[A-Za-z_][\w\[\], .]*[ \t]*)?=[ \t]*|[ \t]*:[ \t]*|)"""
    r"""(?P<open>[(\[{])"""
)
# Functions whose positional arguments are credentials (the name's last word).
_CREDENTIAL_CALL = re.compile(r"(?:auth|login|credentials?|passw(?:or)?d|secret|token)$", re.I)
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_STRUCTURE = re.compile(r"""[()\[\]{}'"#]""")
# A quoted name, then a quoted value as the next argument: `log_param("token", "…")`,
# `os.environ.setdefault("API_KEY", value="…")`.
_QUOTED_PAIR = re.compile(
    r"""(?P<open>['"])(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)(?P=open)"""
    rf"""\s*,\s*(?:[A-Za-z_]\w*\s*=\s*)?(?P<value>{_QUOTED})"""
)
# IPython's `%env NAME VALUE` and `%set_env NAME VALUE` (the `NAME=VALUE` form is an assignment).
_ENV_MAGIC = re.compile(r"(?m)^\s*%(?:set_)?env\s+(?P<name>[A-Za-z_]\w*)[ \t]+(?P<value>\S[^\n]*)")
# An HTTP `Authorization:` header: its whole value (`Basic …`, `token …`) is the credential.
_AUTH_HEADER = re.compile(
    r"""(?i)(?<![\w\-])(?:proxy-)?authori[sz]ation[ \t]*:[ \t]*"""
    r"""(?P<value>(?!<redacted>)[^'"\n\\]*[^'"\n\\ \t])"""
)
# A command-line flag and its value: `--password=…`, `--token …`, `-u user:…`, and in an
# argument list `"--password", "…"` (the flag's closing quote, a comma, the value); a value
# after a space or comma never starts with `-` (`-s --user …`: that is the next flag).
_FLAG_VALUE = r"""'[^'\n]*'|"(?:\\.|[^"\\\n])*"|[^\s'"`;|&<>()]+"""
_SHELL_FLAG = re.compile(
    r"""(?=-)(?<![\w\-])(?P<flag>--?[A-Za-z][A-Za-z0-9_\-]*)"""
    r"""(?:=|[ \t]+(?!-)|(?P<listed>['"])[ \t]*,[ \t]*(?!['"]-))"""
    rf"""(?P<value>{_FLAG_VALUE})"""
)
# `-pSECRET` and `-p'SECRET'`: mysql's password flag, attached to its value.
_ATTACHED_P = re.compile(
    r"""(?=-)(?<![\w\-])-p(?P<value>'[^'\n]*'|"[^"\n]*"|[^\s'"`;|&<>()\-,][^\s'"`;|&<>(),]*)"""
)
# Programs whose `-p` (redis-cli: `-a`) is a password, not a port or `mkdir -p`; `login`:
# `docker login -u bob -p …` (podman, oc, az, helm registry, too).
_PASSWORD_P_PROGRAM = re.compile(
    r"(?i)\b(?:mysql\w*|mariadb[\w\-]*|sshpass|mongo\w*|redis-cli|login)\b"
)
# A long flag's last word that makes its value a credential: `--password`, `--api-key`,
# `--http-password`, `--auth-token`, `-passin` (openssl).
_SECRET_FLAG_WORDS = frozenset(
    {"password", "passwd", "pass", "pw", "pwd", "passphrase", "passin", "passout", "token"}
    | {"secret", "key", "apikey", "credential", "credentials"}
)
_OPENSSL_PASSWORD_FLAGS = frozenset({"passin", "passout", "pass", "password", "passwd"})
# Flags whose value is `user:password`: only what follows the colon is redacted.
_USER_FLAGS = frozenset({"-u", "-U", "--user", "--proxy-user", "--auth", "--basic-auth"})

_KNOWN_PREFIXES = (
    r"(?:sk-|sk_live_|sk_test_|rk_live_|hf_|ghp_|gho_|ghu_|ghs_|github_pat_|glpat-|xox[abprs]-"
    r"|AKIA|ASIA|AIza|ya29\.)"
)
_KNOWN_TOKEN = re.compile(_KNOWN_PREFIXES + r"[A-Za-z0-9_\-.]{8,}")
# The same, standing alone (not the end of a longer word such as `task-…`).
_BARE_KNOWN_TOKEN = re.compile(
    r"(?=[srhgxAy])(?<![A-Za-z0-9_\-.])" + _KNOWN_PREFIXES + r"(?P<tail>[A-Za-z0-9_\-.]{8,})"
)
_BEARER = re.compile(r"\b(?:Bearer|Basic|Token)\s+[A-Za-z0-9_\-.=+/]{8,}", re.IGNORECASE)
_BEARER_VALUE = re.compile(
    r"\b(?P<scheme>Bearer|Basic|Token)(?P<space>\s+)(?P<value>[A-Za-z0-9_\-.=+/]{8,})",
    re.IGNORECASE,
)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.+/=]{20,}")
_STRING_LITERAL = re.compile(r"""(?P<quote>['"])(?P<body>[^'"\n]{8,})(?P=quote)""")
# Random 20+ character strings of mixed case and digits carry ≥ 4 bits per character; words,
# identifiers and hex digests (one case) stay below this or fail the mixed-case test.
_MIN_ENTROPY_BITS = 3.8
# `scheme://user:` — the start of a URL's password (found by `_url_password_spans`).
_URL_USERINFO = re.compile(r"""\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'"<>]*:""")
_URL_REST = re.compile(r"""[^\s'"<>`]{0,2048}""")
# Nested values are walked this deep and this wide at most (parameters are small).
_MAX_NESTED_DEPTH = 20
_MAX_NESTED_ITEMS = 1_000


def is_secret_name(name: str) -> bool:
    """Whether `name` (a variable, key, parameter or flag) names a credential."""
    # Asked on every cell for the names it bound: a notebook reuses a few hundred names, and
    # a lookup costs a fraction of three regex searches. Only plain, short strings are kept
    # (a str subclass may hash and compare as it likes).
    if type(name) is str and len(name) <= _CACHED_NAME_CHARS:
        return _known_secret_name(name)
    return _secret_name(name)


def _secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None or _is_short_secret(name)


_CACHED_NAME_CHARS = 64
_known_secret_name = functools.lru_cache(maxsize=2048)(_secret_name)


def _is_short_secret(name: str) -> bool:
    return _SHORT_NAME.search(name) is not None or _CAMEL_SHORT_NAME.search(name) is not None


def looks_like_credential(text: str) -> bool:
    """True for strings shaped like API keys, bearer tokens, private keys or URL passwords."""
    if _KNOWN_TOKEN.search(text) or _BEARER.search(text) or _PRIVATE_KEY.search(text):
        return True
    if "://" in text and next(_url_password_spans(text), None) is not None:
        return True
    return any(_random_looking(token) for token in _TOKEN_CHARS.findall(text))


def _random_looking(token: str) -> bool:
    """A 20+ character token of mixed case and digits with high entropy; a path
    (`/Users/Alice/Projects2024/x.ipynb`, `runs/<id>.metrics.parquet`: rooted, or with a
    file's `.`, which base64 lacks) is judged piece by piece."""
    if "/" in token and (token.startswith(("/", "~/", "./", "../")) or "." in token):
        return any(len(p) >= 20 and _random_looking(p) for p in token.split("/"))
    # two letters of each case: a time stamp with one `T` and a hex part (our own run ids)
    # is no token; a random mixed-case one almost never has fewer
    return (
        sum(c.islower() for c in token) >= 2
        and sum(c.isupper() for c in token) >= 2
        and any(c.isdigit() for c in token)
        and _entropy_bits(token) >= _MIN_ENTROPY_BITS
    )


def _entropy_bits(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def redact_value(name: str, value: object) -> object:
    """The value to store for a parameter `name`: `<redacted>` for a credential's name or a
    credential-shaped string; a text holding a credential (`"mysql -pSECRET"`) keeps the rest."""
    if is_secret_name(name):
        return REDACTED
    if isinstance(value, str):
        return REDACTED if looks_like_credential(value) else redact_text(value)
    return value


def redact_nested(value: Any, depth: int = 0) -> Any:
    """A plain copy of a (nested) dict, list, tuple or set whose values under credential-named
    keys, and credential-shaped strings, are `<redacted>`: `{"db_password": "…"}`.

    Subclasses are copied as their plain base type: their own methods are never called."""
    if depth > _MAX_NESTED_DEPTH:
        return REDACTED
    if isinstance(value, str):
        text = str.__str__(value)
        return REDACTED if looks_like_credential(text) else redact_text(text)
    if isinstance(value, dict):
        copied = {}
        for key, item in list(dict.items(value))[:_MAX_NESTED_ITEMS]:
            secret = isinstance(key, str) and is_secret_name(str.__str__(key))
            copied[key] = REDACTED if secret else redact_nested(item, depth + 1)
        return copied
    if isinstance(value, list):
        return [redact_nested(item, depth + 1) for item in list.copy(value)[:_MAX_NESTED_ITEMS]]
    if isinstance(value, tuple):
        kept = tuple.__getitem__(value, slice(0, _MAX_NESTED_ITEMS))
        return tuple(redact_nested(item, depth + 1) for item in kept)
    if isinstance(value, set | frozenset):
        members = list(frozenset(value))[:_MAX_NESTED_ITEMS]
        # a redacted set may hold `<redacted>` once where it held two secrets
        redacted = (redact_nested(member, depth + 1) for member in members)
        return {item for item in redacted if _hashable(item)}
    return value


def _hashable(item: Any) -> bool:
    try:
        hash(item)
    except TypeError:
        return False
    return True


def redact_source(source: str) -> str:
    """`source` (a cell: Python, IPython magics, shell escapes) with credential-like names'
    values, credential flags' values and credential-like strings replaced."""
    if "://" in source:
        source = _replace_spans(source, _url_password_spans(source))
    if "PRIVATE KEY-----" in source:
        source = _PRIVATE_KEY_BLOCK.sub(REDACTED, source)
    source = _STRING_LITERAL.sub(_redact_literal, source)
    source = _BARE_KNOWN_TOKEN.sub(_redact_token_in_code, source)
    if "-" in source:
        source = _redact_flags(source)
    lowered = source.lower()
    if "authori" in lowered:
        source = _AUTH_HEADER.sub(_redact_group, source)
    if _SECRET_WORD.search(lowered) is None:
        return source

    def replace(match: re.Match[str]) -> str:
        # `os.environ["API_KEY"] = …`: the subscript names the secret, not `environ`
        if not _names_secret(match.group("name"), match.groupdict().get("close") or ""):
            return match.group(0)
        return _redact_group(match)

    source = _redact_bracketed(source)
    source = _QUOTED_PAIR.sub(replace, _ASSIGNMENT.sub(replace, source))
    return _ENV_MAGIC.sub(replace, source) if "env" in source else source


def redact_text(text: str) -> str:
    """Free text (an output, a log, a text file, a value of unknown kind): redacted as a
    source, and every credential-shaped word in it (not only quoted ones) replaced."""
    text = redact_source(text)
    if "-----BEGIN" in text:
        text = _PRIVATE_KEY_BLOCK.sub(REDACTED, text)
    text = _BARE_KNOWN_TOKEN.sub(REDACTED, text)
    text = _BEARER_VALUE.sub(lambda m: f"{m['scheme']}{m['space']}{REDACTED}", text)
    return _TOKEN_CHARS.sub(lambda m: REDACTED if _random_looking(m[0]) else m[0], text)


def redact_json(value: Any, key: str = "") -> Any:
    """A copy of parsed JSON (a PROV-JSON document, notebook metadata) with every string
    redacted as text (`source` fields as code), every scalar under a credential-named key
    `<redacted>`, and an object named like a credential (`"name": "api_key"`) keeping none
    of its value, description or hash."""
    if isinstance(value, dict):
        named_secret = any(
            _local(k) == "name" and isinstance(v, str) and is_secret_name(v)
            for k, v in value.items()
        )
        copied = {}
        for k, item in value.items():
            local = _local(k)
            if k in _PROV_REFERENCES and isinstance(item, str):
                # A reference to a record of the document, whose id (a key) is never redacted:
                # redacting the reference alone (a hash in an id can look like a token) would
                # leave it pointing nowhere, and `p4m:<redacted>` is not even a valid QName.
                copied[k] = item
                continue
            scalar = isinstance(item, str | int | float) or (isinstance(item, dict) and "$" in item)
            if scalar and (is_secret_name(local) or (named_secret and local in _VALUE_KEYS)):
                copied[k] = REDACTED
            else:
                copied[k] = redact_json(item, local)
        return copied
    if isinstance(value, list):
        return [redact_json(item, key) for item in value]
    if isinstance(value, str):
        return redact_source(value) if key == "source" else redact_text(value)
    return value


# The PROV-JSON fields of a relation that name another record by its id.
_PROV_REFERENCES = frozenset(
    f"prov:{name}"
    for name in [
        "entity",
        "activity",
        "agent",
        "informed",
        "informant",
        "generatedEntity",
        "usedEntity",
        "trigger",
        "starter",
        "ender",
        "generation",
        "usage",
        "delegate",
        "responsible",
        "plan",
        "influencer",
        "influencee",
        "specificEntity",
        "generalEntity",
        "alternate1",
        "alternate2",
        "collection",
    ]
)


# What an object named like a credential says of its value (PROV: variables, parameters).
_VALUE_KEYS = frozenset({"value", "description", "value_sha256", "sha256", "$"})


def _local(key: str) -> str:
    """`p4m:value_sha256` → `value_sha256`."""
    return key.rsplit(":", 1)[-1]


def _names_secret(name: str, close: str) -> bool:
    """Whether `name` (with the quote or subscript that closed it) names a credential."""
    if is_secret_name(name + close):
        return True
    # `d["pw"] = …`: a quoted short name still names one (a quoted `key` does not)
    return bool(close) and close.strip("'\"]") == "" and _is_short_secret(name)


def _redact_group(match: re.Match[str]) -> str:
    """The match with its `value` group replaced by `<redacted>`, quotes kept."""
    groups = match.groupdict()
    quote = groups.get("quote") or groups.get("quote1") or ""
    start, end = match.start("value") - match.start(), match.end("value") - match.start()
    text = match.group(0)
    return f"{text[:start]}{quote}{REDACTED}{quote}{text[end:]}"


def _redact_literal(match: re.Match[str]) -> str:
    if not looks_like_credential(match.group("body")):
        return match.group(0)
    return f"{match.group('quote')}{REDACTED}{match.group('quote')}"


def _redact_token_in_code(match: re.Match[str]) -> str:
    """A known token format outside a string (a comment, a shell escape): in code, only one
    long and mixed enough that an identifier such as `hf_hub_download_v2` is not taken."""
    tail = match.group("tail")
    lower = any(c.islower() for c in tail)
    upper = any(c.isupper() for c in tail)
    digit = any(c.isdigit() for c in tail)
    # ghp_/hf_/sk-… tokens mix all three; AKIA… keys are upper case and digits
    mixed = (lower and upper and digit) or (upper and digit and not lower)
    return REDACTED if len(tail) >= 16 and mixed else match.group(0)


def _url_password_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each password in `scheme://user:password@host`, where the password
    may itself hold `@`, `/` or `:` (it ends at the last `@` before the host's first `/`).
    `host:443/@user` (a port, then a path with `@`) is no password."""
    for match in _URL_USERINFO.finditer(text):
        start = match.end()
        rest = _URL_REST.match(text, start)
        tail = rest.group(0) if rest is not None else ""
        first_at = tail.find("@")
        if first_at < 0:
            continue
        slash = tail.find("/", first_at)
        last_at = tail.rfind("@", 0, slash if slash >= 0 else len(tail))
        password = tail[:last_at]
        if not password or ("/" in password and password.split("/", 1)[0].isdigit()):
            continue
        yield start, start + last_at


def _replace_spans(text: str, spans: Iterator[tuple[int, int]]) -> str:
    pieces, done = [], 0
    for start, end in spans:
        if start < done:
            continue
        pieces += [text[done:start], REDACTED]
        done = end
    return "".join(pieces) + text[done:] if pieces else text


def _redact_flags(source: str) -> str:
    """Credentials given to programs on a command line, wherever the command is written:
    a shell escape (`!curl -u bob:…`), `%%bash`, a string (`os.system("mysql -p…")`), an
    argument list (`["curl", "--user", "bob:…"]`)."""

    def line_of(match: re.Match[str]) -> str:
        start = source.rfind("\n", 0, match.start()) + 1
        end = source.find("\n", match.end())
        return source[start : end if end >= 0 else len(source)]

    def flag(match: re.Match[str]) -> str:
        name, value = match.group("flag"), match.group("value")
        if value.startswith(REDACTED) or value.strip("'\"") == REDACTED:
            return match.group(0)
        words = re.split(r"[-_]", name.lstrip("-").lower())
        # `--password`, and openssl's single-dash `-passin pass:…` (not `-key`: `y = -key * 2`)
        long_form = name.startswith("--") or words[-1] in _OPENSSL_PASSWORD_FLAGS
        if long_form and words[-1] in _SECRET_FLAG_WORDS:
            return _with_value(match, REDACTED)
        if name in _USER_FLAGS:
            quote = value[0] if value[:1] in "'\"" else ""
            inner = value[len(quote) : len(value) - len(quote)] if quote else value
            user, colon, password = inner.partition(":")
            if colon and password and password != REDACTED:
                return _with_value(match, f"{quote}{user}:{REDACTED}{quote}", raw=True)
            return match.group(0)
        if name in ("-p", "-a"):
            program = _PASSWORD_P_PROGRAM.search(line_of(match))
            # redis-cli's password flag is `-a` (its `-p` is a port); the others' is `-p`
            password_flag = "-a" if program and program[0].lower() == "redis-cli" else "-p"
            quoted = value[:1] in "'\"" and match.group("listed") is None
            if name == password_flag and (program is not None or quoted):
                return _with_value(match, REDACTED)
        return match.group(0)

    def attached(match: re.Match[str]) -> str:
        value = match.group("value")
        if value.strip("'\"") == REDACTED:
            return match.group(0)
        if value[:1] in "'\"" and source[match.start() - 1 : match.start()] in ("'", '"'):
            return match.group(0)  # `"-p", "…"`: a listed flag and its value, seen above
        if _PASSWORD_P_PROGRAM.search(line_of(match)) is None:
            return match.group(0)
        return _with_value(match, REDACTED)

    source = _SHELL_FLAG.sub(flag, source)
    return _ATTACHED_P.sub(attached, source) if "-p" in source else source


def _with_value(match: re.Match[str], replacement: str, raw: bool = False) -> str:
    """The match with its `value` group replaced, quotes of a quoted value kept (unless
    `raw`: the replacement carries them)."""
    value = match.group("value")
    quote = value[0] if not raw and value[:1] in "'\"" and len(value) > 1 else ""
    start, end = match.start("value") - match.start(), match.end("value") - match.start()
    text = match.group(0)
    return f"{text[:start]}{quote}{replacement}{quote}{text[end:]}"


def _redact_bracketed(source: str) -> str:
    """Every string in the brackets after a credential's name (`auth=("bob", "…")`) or in
    the arguments of a credential-taking call (`HTTPBasicAuth("bob", "…")`)."""
    pairs: dict[int, int] | None = None
    spans = []
    for match in _BRACKETED.finditer(source):
        name = match.group("name")
        if match.group("sep") or match.group("close"):
            secret = _names_secret(name, match.group("close"))
        else:
            secret = match.group("open") == "(" and _CREDENTIAL_CALL.search(name) is not None
        if not secret:
            continue
        if pairs is None:
            pairs = _bracket_pairs(source)  # once, and only for a cell that needs it
        end = pairs.get(match.end() - 1)
        if end is not None:
            spans.append((match.end(), end))
    if not spans:
        return source
    pieces, done = [], 0
    for start, end in spans:
        if start < done:
            continue
        pieces += [source[done:start], _LITERAL.sub(_redact_every_literal, source[start:end])]
        done = end
    return "".join(pieces) + source[done:]


def _bracket_pairs(source: str) -> dict[int, int]:
    """Where each bracket of `source` closes (open index → close index), strings and
    comments skipped: one pass, however many brackets the cell has. An unbalanced closing
    bracket (IPython syntax, a syntax error) forgets the brackets open before it."""
    pairs: dict[int, int] = {}
    stack: list[tuple[int, str]] = []
    found = _STRUCTURE.search(source)
    while found is not None:
        char, index = found.group(0), found.start()
        if char in "'\"":
            literal = _LITERAL.match(source, index)
            if literal is not None:
                index = literal.end() - 1
        elif char == "#":
            newline = source.find("\n", index)
            if newline < 0:
                break
            index = newline
        elif char in _CLOSING:
            stack.append((index, _CLOSING[char]))
        elif stack and stack[-1][1] == char:
            pairs[stack.pop()[0]] = index
        else:
            stack.clear()
        found = _STRUCTURE.search(source, index + 1)
    return pairs


def _redact_every_literal(match: re.Match[str]) -> str:
    text = match.group(0)
    quote = match.group("quote") or match.group("quote1") or ""
    prefix = text[: text.index(quote)]
    return f"{prefix}{quote}{REDACTED}{quote}"
