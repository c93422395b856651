"""How values are written down wherever they leave memory: UTC times in ISO 8601, text that
UTF-8 can hold, and strict JSON (which has no NaN). One definition of each, so the journal,
the index, PROV documents, exports and views agree."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


def utc_datetime(unix_s: float) -> dt.datetime:
    """A Unix time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(unix_s, tz=dt.timezone.utc)


def iso_utc(unix_s: float) -> str:
    """A Unix time in ISO 8601, UTC (`2026-12-04T15:00:00.123456+00:00`)."""
    return utc_datetime(unix_s).isoformat()


def utf8_safe(text: str) -> str:
    """`text` with lone surrogates (from bytes decoded with surrogateescape) written as their
    `\\udcxx` escapes: UTF-8 cannot hold them, and a record that holds one would be lost."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def strict_json(value: Any) -> Any:
    """Tuples as lists and non-finite floats as text (`'nan'`, `'inf'`), so `json.dumps(...,
    allow_nan=False)` accepts it."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
