"""Keep credentials out of provenance.

Two rules, applied to parameters and to the stored copy of each cell's source:
- by name: the value given to a name that looks like a credential's (`api_key = "…"`,
  `--param token=…`, `{"password": "…"}`) is stored as `<redacted>`;
- by value: a string that looks like a credential wherever it appears (known token formats,
  `Bearer …`, PEM private keys, long random-looking mixed-case strings).
The cell's sha256 stays that of the original source, so it still identifies the code that ran.
"""

from __future__ import annotations

import math
import re
from collections import Counter

REDACTED = "<redacted>"
SECRET_NAME = re.compile(
    r"token|secret|passw(?:or)?d|api[_-]?key|(?:^|_)key(?:$|_)|credential|auth", re.IGNORECASE
)
# A cheap first test of a whole cell: could any name in it be a secret's? (`SECRET_NAME`
# anchors `key` to the ends of a name, which a whole source never matches.)
# Matched against the lower-cased source: ~10x faster than an IGNORECASE search.
_SECRET_WORD = re.compile(r"token|secret|passw|key|credential|auth")
# A quoted string: triple-quoted (may span lines) or single-line, escapes included.
_QUOTED = (
    r"""[rRbBuUfF]{0,2}(?:(?P<quote>'''|\"\"\")[\s\S]*?(?P=quote)"""
    r"""|(?P<quote1>['"])(?:\\.|[^\\\n])*?(?P=quote1))"""
)
# a name, then an optional closing quote and `]` (dict keys, `os.environ["X"]`) or a subscript
# (`secrets["db"]`), then `=`, `:` or `: type =`, then a value: a quoted string or a bare token
# (which stops at `(` and `=`, so `d = dict(secret=…)` still reaches `secret`; a call such as
# `os.getenv(…)` is code, not a secret, and is kept).
_ASSIGNMENT = re.compile(
    # only a name holding a secret word can match: scanning stays fast on long cells
    r"""(?<![A-Za-z0-9_\-])(?=[A-Za-z_])"""
    r"""(?P<name>(?i:[A-Za-z0-9_\-]*?(?:token|secret|passw|key|credential|auth))[A-Za-z0-9_\-]*)"""
    r"""(?P<close>['"]?\]?|\[[^\]\n]*\])"""
    r"""(?P<sep>\s*(?::\s*[A-Za-z_][\w\[\], .]*\s*)?=\s*|\s*:\s*)"""
    rf"""(?P<value>{_QUOTED}|[^\s,()}}\]#'"=]+(?![^\s,()}}\]#'"=]*\())"""
)
# A quoted name, then a quoted value as the next argument: `log_param("token", "…")`,
# `os.environ.setdefault("API_KEY", value="…")`.
_QUOTED_PAIR = re.compile(
    r"""(?P<open>['"])(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)(?P=open)"""
    rf"""\s*,\s*(?:[A-Za-z_]\w*\s*=\s*)?(?P<value>{_QUOTED})"""
)
# IPython's `%env NAME VALUE` and `%set_env NAME VALUE` (the `NAME=VALUE` form is an assignment).
_ENV_MAGIC = re.compile(r"(?m)^\s*%(?:set_)?env\s+(?P<name>[A-Za-z_]\w*)[ \t]+(?P<value>\S[^\n]*)")
# The password of `scheme://user:password@host`.
_URL_PASSWORD = re.compile(
    r"""\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'"]*:(?P<value>(?!<redacted>@)[^/\s@'"]+)(?=@)"""
)


_KNOWN_TOKEN = re.compile(
    r"(?:sk-|sk_live_|sk_test_|rk_live_|hf_|ghp_|gho_|ghu_|ghs_|github_pat_|glpat-|xox[abprs]-"
    r"|AKIA|ASIA|AIza|ya29\.)[A-Za-z0-9_\-.]{8,}"
)
_BEARER = re.compile(r"\b(?:Bearer|Basic|Token)\s+[A-Za-z0-9_\-.=+/]{8,}", re.IGNORECASE)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.+/=]{20,}")
_STRING_LITERAL = re.compile(r"""(?P<quote>['"])(?P<body>[^'"\n]{8,})(?P=quote)""")
# Random 20+ character strings of mixed case and digits carry ≥ 4 bits per character; words,
# identifiers and hex digests (one case) stay below this or fail the mixed-case test.
_MIN_ENTROPY_BITS = 3.8


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def looks_like_credential(text: str) -> bool:
    """True for strings shaped like API keys, bearer tokens or private keys."""
    if (
        _KNOWN_TOKEN.search(text)
        or _BEARER.search(text)
        or _PRIVATE_KEY.search(text)
        or _URL_PASSWORD.search(text)
    ):
        return True
    for token in _TOKEN_CHARS.findall(text):
        if (
            any(c.islower() for c in token)
            and any(c.isupper() for c in token)
            and any(c.isdigit() for c in token)
            and _entropy_bits(token) >= _MIN_ENTROPY_BITS
        ):
            return True
    return False


def _entropy_bits(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def redact_value(name: str, value: object) -> object:
    """The value to store for a parameter `name`."""
    if is_secret_name(name) or (isinstance(value, str) and looks_like_credential(value)):
        return REDACTED
    return value


def redact_source(source: str) -> str:
    """`source` with credential-like names' values and credential-like strings replaced."""
    if "://" in source:
        source = _URL_PASSWORD.sub(_redact_group, source)
    source = _STRING_LITERAL.sub(_redact_literal, source)
    if _SECRET_WORD.search(source.lower()) is None:
        return source

    def replace(match: re.Match[str]) -> str:
        # `os.environ["API_KEY"] = …`: the subscript names the secret, not `environ`
        if not is_secret_name(match.group("name") + (match.groupdict().get("close") or "")):
            return match.group(0)
        return _redact_group(match)

    source = _QUOTED_PAIR.sub(replace, _ASSIGNMENT.sub(replace, source))
    return _ENV_MAGIC.sub(replace, source) if "env" in source else source


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
