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
# name, optional closing quote (dict keys), then `=`, `:` or `: type =`, then a value: a
# quoted string (single line) or a bare token.
_ASSIGNMENT = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)(?P<close>['"]?)"""
    r"""(?P<sep>\s*(?::\s*[A-Za-z_][\w\[\], .]*\s*)?=\s*|\s*:\s*)"""
    r"""(?P<value>[rRbBuUfF]{0,2}(?P<quote>['"]).*?(?P=quote)|[^\s,)}\]#'"]+)"""
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
    if _KNOWN_TOKEN.search(text) or _BEARER.search(text) or _PRIVATE_KEY.search(text):
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
    source = _STRING_LITERAL.sub(_redact_literal, source)
    if SECRET_NAME.search(source) is None:
        return source

    def replace(match: re.Match[str]) -> str:
        if not is_secret_name(match.group("name")):
            return match.group(0)
        quote = match.group("quote")
        value = f"{quote}{REDACTED}{quote}" if quote else REDACTED
        return f"{match.group('name')}{match.group('close')}{match.group('sep')}{value}"

    return _ASSIGNMENT.sub(replace, source)


def _redact_literal(match: re.Match[str]) -> str:
    if not looks_like_credential(match.group("body")):
        return match.group(0)
    return f"{match.group('quote')}{REDACTED}{match.group('quote')}"
