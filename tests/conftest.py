"""Shared fixtures: an isolated real IPython shell, with what it displays captured."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from functools import cache, partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_prov4ml.settings import STORE_ENV

REPO = Path(__file__).resolve().parent.parent
# The `kernels` fixture: real kernel processes. (Not a module named `kernels`: that is a
# package transformers imports, and tests/ is on sys.path.)
pytest_plugins = ("kernel_processes",)
# The tiers, kept apart by folder: each test gets its folder's marker, so `-m unit` (or
# `-m "not browser"`) picks a tier without every file having to say which one it is in.
TIERS = ("unit", "shell", "cli", "kernel", "browser")
# CI runs the property tests on a fixed seed: the same inputs on every run of one commit, so a
# submission is judged on its code, not on the inputs a run happened to draw. A developer's
# runs draw new inputs each time (`HYPOTHESIS_PROFILE=ci` reproduces CI's).
settings.register_profile("ci", derandomize=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for item in items:
        relative = item.path.resolve().relative_to(tests)
        if relative.parts and relative.parts[0] in TIERS:
            item.add_marker(relative.parts[0])


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh store folder, set through the documented environment variable."""
    store = tmp_path / "store"
    monkeypatch.setenv(STORE_ENV, str(store))
    # Where a kernel would record if it refused this store: never the real home's.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return store


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_dir: Path) -> Iterator[Any]:
    """A brand-new InteractiveShell singleton (so `display()` reaches it), history in memory,
    working directory in a temp folder, and every display captured in `shell.display_pub`."""
    monkeypatch.chdir(tmp_path)
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    ip = InteractiveShell.instance(config=config, display_pub_class=CapturingDisplayPublisher)
    yield ip
    dispose_shell(ip)


def dispose_shell(ip: Any) -> None:
    """Unload the extension, close the shell's history and forget the shell, including its
    exit hook: IPython registers each shell's `atexit_operations` (a namespace reset and a
    full `gc.collect()`), and hundreds of test shells in a process that has imported torch and
    transformers made pytest spend many minutes exiting after its last test."""
    if getattr(ip, "_jupyter_prov4ml", None) is not None:
        ip.run_line_magic("unload_ext", "jupyter_prov4ml")
    ip.history_manager.end_session()
    atexit.unregister(ip.atexit_operations)
    InteractiveShell.clear_instance()


@pytest.fixture
def loaded(shell: Any) -> Any:
    """A shell with the extension loaded the way a user loads it: from a cell."""
    result = shell.run_cell("%load_ext jupyter_prov4ml")
    assert result.success, result.error_in_exec
    return shell


def displayed(shell: Any) -> list[dict[str, Any]]:
    """The mime bundles displayed so far."""
    # IPython ≥ 8 stores dicts with a "data" key; older versions stored (data, metadata).
    return [
        output["data"] if isinstance(output, dict) else output[0]
        for output in shell.display_pub.outputs
    ]


def extension_of(shell: Any) -> Any:
    return shell._jupyter_prov4ml


def journal_events(store: Path) -> list[dict[str, Any]]:
    """Every journal line of every session in a store; a plain cell's compact line comes as
    the `close` event of its whole record (what it decodes to), with `"compact": True`."""
    events = []
    for journal in sorted(store.glob("sessions/*/journal.jsonl")):
        events += expanded_events(json.loads(line) for line in journal.read_text().splitlines())
    return events


def expanded_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journal events of one journal, in order, compact cell lines expanded (see above)."""
    from jupyter_prov4ml.store.codec import CELL_EVENT, expand_cell

    out: list[dict[str, Any]] = []
    session: dict[str, Any] = {}
    for event in events:
        if event.get("event") == "session":
            session = event["session"]
        if event.get("event") == CELL_EVENT:
            run = expand_cell(event, session["session_id"], session.get("notebook_path"))
            event = {"event": "close", "run": run, "compact": True}
        out.append(event)
    return out


def closed_runs(store: Path) -> list[dict[str, Any]]:
    """Each closed run's record as the journal finally says it (a %%provrun's record is
    journaled when it ends, then again with its data files: the last line counts), in the
    order runs were first closed."""
    runs: dict[str, dict[str, Any]] = {}
    for event in journal_events(store):
        if event["event"] == "close":
            runs[event["run"]["run_id"]] = event["run"]
    return list(runs.values())


def deserialize_strict(path: Path) -> Any:
    """Read a PROV-JSON file back with `prov`, failing on any warning, after checking it
    against the W3C PROV-JSON schema."""
    return read_prov_json_strict(path.read_text(encoding="utf-8"), source=str(path))


def read_prov_json_strict(text: str, source: str = "PROV-JSON text") -> Any:
    """PROV-JSON text, valid against the W3C schema, read back with `prov` failing on any
    warning (`source` names it in a failure)."""
    return prov_json_checker().read_back(text, source)


PROV_JSON_SCHEMA = REPO / "tests" / "schemas" / "prov-json.schema.json"


class ProvJsonChecker:
    """The vendored W3C PROV-JSON schema (see tests/schemas/README.md), compiled once, and the
    documents that passed it and `prov`'s strict read-back, by the sha256 of their text."""

    def __init__(self, schema_path: Path) -> None:
        import fastjsonschema
        from jsonschema.validators import validator_for

        schema = json.loads(schema_path.read_text(encoding="utf-8"))
        validator_class = validator_for(schema)  # Draft4Validator, as its "$schema" says
        validator_class.check_schema(schema)
        # With the draft's format checker, "uri" and "date-time" are asserted, not annotations.
        formats = validator_class.FORMAT_CHECKER
        self.validator = validator_class(schema, format_checker=formats)
        # The same schema compiled to Python decides pass or fail: ~15x faster on the suite's
        # megabyte documents. It uses jsonschema's own format checks, so both agree on formats;
        # jsonschema explains failures.
        self._passes = fastjsonschema.compile(
            schema,
            formats={name: partial(formats.conforms, format=name) for name in ("uri", "date-time")},
        )
        self.passed: set[str] = set()

    def first_error(self, document: Any) -> str | None:
        """The most relevant schema error (jsonschema's `best_match`), or None if valid."""
        import fastjsonschema
        from jsonschema.exceptions import best_match

        try:
            self._passes(document)
        except fastjsonschema.JsonSchemaException as fast:
            error = best_match(self.validator.iter_errors(document))
            if error is None:  # should the two validators ever disagree, the stricter wins
                return f"(fastjsonschema) {fast.message}"
            return f"at {error.json_path}: {error.message}"
        return None

    def read_back(self, text: str, source: str) -> Any:
        """`text` read back with `prov` (failing on any warning) once it has passed the schema;
        a failure names `source` and the first schema error."""
        from prov.model import ProvDocument

        digest = text_digest(text)
        if digest not in self.passed:
            error = self.first_error(json.loads(text))
            assert error is None, f"{source} fails the PROV-JSON schema {error}"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            document = ProvDocument.deserialize(content=text, format="json")
        self.passed.add(digest)
        return document

    def validate_files_under(self, folder: Path) -> None:
        """Every `*.prov.json` under `folder` not yet checked: schema-valid and read back."""
        for path in sorted(folder.rglob("*.prov.json")):
            text = path.read_text(encoding="utf-8")
            if text_digest(text) not in self.passed:
                self.read_back(text, str(path))


def text_digest(text: str) -> str:
    """What the checker remembers of a document it passed."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@cache
def prov_json_checker() -> ProvJsonChecker:
    """One checker for the whole test session: compiling the schema is the slow part."""
    return ProvJsonChecker(PROV_JSON_SCHEMA)


@pytest.fixture(autouse=True)
def prov_json_files_are_valid(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that has a `tmp_path` (the stores of shell, kernel and CLI tests live
    there), every PROV-JSON document in it reads back with `prov` and passes the schema."""
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if folder is not None:
        prov_json_checker().validate_files_under(folder)


@pytest.fixture(scope="session", autouse=True)
def prov_json_files_of_shared_fixtures_are_valid(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """At the end of the session, the same for the folders of module-scoped fixtures (real
    kernels, JupyterLab), which no single test's `tmp_path` holds."""
    yield
    prov_json_checker().validate_files_under(tmp_path_factory.getbasetemp())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """With -v, how many distinct PROV-JSON documents passed the schema."""
    if config.get_verbosity() > 0 and prov_json_checker.cache_info().currsize:
        count = len(prov_json_checker().passed)
        terminalreporter.write_line(f"PROV-JSON documents valid against the W3C schema: {count}")


have_dot = shutil.which("dot") is not None


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command line, in a subprocess, as a user would run it (`env`: its whole
    environment, else this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_prov4ml.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# A session id and a store with one closed %%provrun (with a metrics file) that tests tamper
# with as a copied store might be.
STORED_SESSION_ID = "20260101T000000-abcdef"


def stored_session(session_id: str = STORED_SESSION_ID) -> Any:
    from jupyter_prov4ml.records import SessionInfo

    return SessionInfo(session_id, "u", time.time(), (), "h", "p", "cpu", 2, 1)


def store_with_a_run(root: Path, name: str | None = None) -> tuple[Any, str]:
    """A store written by a real writer, holding one closed run with a metrics file; the
    store and the run's id."""
    from jupyter_prov4ml.capture.metrics import MetricLog
    from jupyter_prov4ml.capture.recorder import OpenWindow, build_run
    from jupyter_prov4ml.capture.run_capture import RunSeries
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.store.layout import Store
    from jupyter_prov4ml.store.writer import StoreWriter

    store = Store(root)
    writer = StoreWriter(store, stored_session(), Notices())
    writer.start()
    run_id = f"{STORED_SESSION_ID}-00001"
    window = OpenWindow(run_id, "x = 1", "ab" * 32, None, time.time(), 0, 0)
    metrics = MetricLog(0)
    metrics.log("loss", 0.5, 0, "training")
    run = build_run(STORED_SESSION_ID, None, window, 10**9, 0, "provrun", "ok", None, 1, name=name)
    writer.submit_run(run, RunSeries(metrics))
    assert writer.close()
    return store, run.run_id
