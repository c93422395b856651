"""A cell's version as the kernel keys it: the source when short, its hash when long."""

from __future__ import annotations

import hashlib

from jupyter_prov4ml.identity import SourceDigest, cell_version, source_sha256, version_sha256


def test_short_sources_are_their_own_version_and_long_ones_their_hash() -> None:
    short, long = "x = 1\n", "#" * 5_000 + "\nx = 1\n"
    assert cell_version(short) is short
    assert type(cell_version(long)) is SourceDigest
    assert cell_version(long) == hashlib.sha256(long.encode()).hexdigest()
    assert version_sha256(cell_version(short)) == source_sha256(short)
    assert version_sha256(cell_version(long)) == source_sha256(long)


def test_a_short_source_that_looks_like_a_hash_is_still_a_source() -> None:
    """A cell whose code is 64 hex digits is not mistaken for a long cell's hash."""
    text = "ab" * 32
    assert version_sha256(cell_version(text)) == source_sha256(text) != text
