"""The PROV-JSON schema check the whole suite relies on (tests/conftest.py) really checks: it
passes what `prov` writes, fails what the W3C schema forbids, and names the file and the error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument

from conftest import PROV_JSON_SCHEMA, ProvJsonChecker, prov_json_checker
from jupyter_prov4ml.provmodel import serialize, session_document
from jupyter_prov4ml.records import CellRef, CellRun


def prov_written_document() -> dict[str, Any]:
    """A small document as `prov` writes it: prefixes, typed literals, a relation with a time."""
    doc = ProvDocument()
    ex = doc.add_namespace("ex", "https://example.org/ns#")
    data = doc.entity(ex["data"], {ex["rows"]: 3, ex["label"]: "input"})
    run = doc.activity(ex["run"], "2024-01-01T00:00:00+00:00", "2024-01-01T00:01:00+00:00")
    run.used(data, "2024-01-01T00:00:01+00:00")
    doc.agent(ex["alice"]).actedOnBehalfOf(ex["lab"])
    result: dict[str, Any] = json.loads(doc.serialize(format="json"))
    return result


@pytest.fixture
def checker() -> ProvJsonChecker:
    """A checker of its own, so documents passed elsewhere in the session are not skipped."""
    return ProvJsonChecker(PROV_JSON_SCHEMA)


def test_vendored_schema_is_the_w3c_submission_schema() -> None:
    """The vendored file is the one tests/schemas/README.md describes, byte for byte."""
    schema = json.loads(PROV_JSON_SCHEMA.read_text(encoding="utf-8"))
    assert schema["id"] == "http://provenance.ecs.soton.ac.uk/prov-json/schema#"
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    digest = hashlib.sha256(PROV_JSON_SCHEMA.read_bytes()).hexdigest()
    assert digest in (PROV_JSON_SCHEMA.parent / "README.md").read_text(encoding="utf-8")


def test_the_session_checker_is_compiled_once() -> None:
    """Every helper and fixture shares one compiled validator."""
    assert prov_json_checker() is prov_json_checker()


def test_prov_written_document_passes(checker: ProvJsonChecker) -> None:
    """What `prov` itself serializes is valid, and is remembered as checked."""
    text = json.dumps(prov_written_document())
    checker.read_back(text, "example")
    assert len(checker.passed) == 1


@pytest.mark.parametrize(
    ("change", "path"),
    [
        # The root admits only PROV-JSON's own keys.
        (lambda d: d.update(extra={}), "$"),
        # A typed literal needs its "$" value.
        (lambda d: d["entity"]["ex:data"].update({"ex:rows": {"type": "xsd:int"}}), "$.entity"),
        # Identifiers are checked as URIs (the format checker is on): a space is not allowed.
        (lambda d: next(iter(d["used"].values())).update({"prov:entity": "ex:a b"}), "$.used"),
        # Times in relations are checked as date-times.
        (lambda d: next(iter(d["used"].values())).update({"prov:time": "yesterday"}), "$.used"),
        # Empty attribute arrays are not PROV-JSON.
        (lambda d: d["entity"]["ex:data"].update({"ex:tags": []}), "$.entity"),
        # The schema's known misspelling: `wasEndedBy` is refused at the root (README.md).
        (lambda d: d.update(wasEndedBy={"_:e": {"prov:activity": "ex:run"}}), "$"),
    ],
)
def test_schema_violations_fail_with_source_and_path(
    checker: ProvJsonChecker, change: Any, path: str
) -> None:
    """A document the W3C schema forbids fails, naming where it came from and where it breaks."""
    document = prov_written_document()
    change(document)
    with pytest.raises(AssertionError, match=r"broken\.prov\.json fails") as failure:
        checker.read_back(json.dumps(document), "broken.prov.json")
    assert f"at {path}" in str(failure.value)
    assert not checker.passed


def test_files_under_a_folder_are_read_back_and_checked(
    checker: ProvJsonChecker, tmp_path: Path
) -> None:
    """The per-test sweep finds nested `*.prov.json` files and names the one that fails."""
    good = tmp_path / "store" / "sessions" / "s" / "runs" / "good.prov.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps(prov_written_document()), encoding="utf-8")
    checker.validate_files_under(tmp_path)
    bad = good.with_name("bad.prov.json")
    bad.write_text(json.dumps({**prov_written_document(), "extra": {}}), encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match=r"bad\.prov\.json fails the PROV-JSON schema"):
            checker.validate_files_under(tmp_path)
    finally:
        bad.unlink()  # else this test's own sweep would (rightly) fail it


def test_an_edit_undone_and_redone_states_its_derivation_once(checker: ProvJsonChecker) -> None:
    """A cell toggled between two sources derives the same version from the same one many
    times; the session document states it once, so `prov` writes no list PROV-JSON forbids."""
    versions = [CellRef(c * 64, f"x = {i}", "cell-1") for i, c in enumerate("ab")]
    runs = [
        CellRun(
            run_id=f"S-{n:05d}",
            session_id="S",
            kind="cell",
            cell=versions[n % 2],
            started_at_unix_s=1_700_000_000.0 + n,
            ended_at_unix_s=1_700_000_000.5 + n,
            wall_time_s=0.5,
            cpu_time_s=0.5,
            status="ok",
            derived_from_sha256=versions[(n + 1) % 2].sha256 if n else None,
        )
        for n in range(6)
    ]
    text = serialize(session_document(runs, None))
    derivations = json.loads(text)["wasDerivedFrom"]
    assert sorted(
        (d["prov:generatedEntity"], d["prov:usedEntity"]) for d in derivations.values()
    ) == [
        ("p4m:cell_" + "a" * 16, "p4m:cell_" + "b" * 16),
        ("p4m:cell_" + "b" * 16, "p4m:cell_" + "a" * 16),
    ]
    checker.read_back(text, "session document")
