"""What an RO-Crate export must never hold, and what it must: no credential in any file of
the crate (whatever form it was written in, whether or not the store had redacted it), no file
from outside the store (a copied store is untrusted), not the notebook file as it is now but
the cells as they ran, the run's artifacts (copied ones as files, others by sha256), and files
readable by the user only."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import cli, extension_of
from jupyter_prov4ml.cli.main import main
from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.store.layout import StoredRun

rocrate = pytest.importorskip("rocrate.rocrate")


def plain_secret(label: str) -> str:
    """Lower-case words and hex: not credential-shaped, so only its form gives it away."""
    return f"{label}-opensesame-{os.urandom(4).hex()}"


SECRETS = {
    "literal password": plain_secret("literal"),
    "nested literal key": plain_secret("nested"),
    "nested log_param key": plain_secret("logged"),
    "--param": plain_secret("magic"),
    "auth tuple": plain_secret("tuple"),
    "positional call": plain_secret("call"),
    "curl -u": plain_secret("curl"),
    "mysql -p": plain_secret("mysql"),
    "--password argv": plain_secret("argv"),
    "URL password with / and @": plain_secret("url") + "/x@y",
    "short name pw": plain_secret("pw"),
    "%env": plain_secret("env"),
    "text artifact": plain_secret("artifact"),
    "notebook file cell": plain_secret("notebook-cell"),
    "notebook file output": plain_secret("notebook-output"),
}

CELLS = [
    "def HTTPBasicAuth(user, password):\n    return (user, password)",
    f'auth = ("bob", "{SECRETS["auth tuple"]}")',
    f'session_auth = HTTPBasicAuth("bob", "{SECRETS["positional call"]}")',
    f"!true -u bob:{SECRETS['curl -u']} https://example.org",
    f"!mysql -u root -p{SECRETS['mysql -p']} -e 'select 1' 2>/dev/null || true",
    "import subprocess\n"
    f'done = subprocess.run(["true", "--password", "{SECRETS["--password argv"]}"])',
    f'db_url = "postgresql://bob:{SECRETS["URL password with / and @"]}@db.example.org/runs"',
    f'pw = "{SECRETS["short name pw"]}"',
    f"%env DB_PW {SECRETS['%env']}",
]


def provrun_cell(artifacts: Path) -> str:
    return (
        f"%%provrun --name trusted --no-graph --no-live --param api_key={SECRETS['--param']}\n"
        "from jupyter_prov4ml import log_artifact, log_param\n"
        f'password = "{SECRETS["literal password"]}"\n'
        f'config = {{"lr": 0.1, "db_password": "{SECRETS["nested literal key"]}"}}\n'
        f'log_param("settings", {{"password": "{SECRETS["nested log_param key"]}"}})\n'
        f'log_artifact("{artifacts / "model.bin"}", copy=True)\n'
        f'log_artifact("{artifacts / "config.yaml"}", copy=True)\n'
        f'log_artifact("{artifacts / "weights.pt"}")\n'
    )


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\x00\x01weights\x00" * 100)
    (folder / "config.yaml").write_text(
        f"lr: 0.1\npassword: {SECRETS['text artifact']}\nepochs: 3\n", encoding="utf-8"
    )
    (folder / "weights.pt").write_bytes(b"\x00not-copied\x00" * 50)
    return folder


@pytest.fixture
def notebook_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The notebook the kernel serves, holding a secret in a cell never run and in an output."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f'token = "{SECRETS["notebook file cell"]}"')
    cell.outputs = [nbformat.v4.new_output("stream", text=f"{SECRETS['notebook file output']}\n")]
    notebook.cells = [cell]
    path = tmp_path / "train.ipynb"
    nbformat.write(notebook, path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    return path


@pytest.fixture
def session(loaded: Any, notebook_file: Path, artifacts: Path) -> StoredRun:
    """A session that met every planted secret, then a %%provrun with artifacts, then a cell
    after it; the provrun as the store holds it."""
    for source in [*CELLS, provrun_cell(artifacts), "after_the_run = 1"]:
        result = loaded.run_cell(source, store_history=True)
        assert result.success, (source, result.error_in_exec)
    extension = extension_of(loaded)
    assert extension.writer.flush(timeout_s=30)
    (stored,) = [s for s in extension.store.runs() if s.run.kind == "provrun"]
    return stored


def crate_bytes(out: Path) -> Iterator[tuple[str, bytes]]:
    """Every file of a crate folder or zip, by name."""
    if out.suffix == ".zip":
        with zipfile.ZipFile(out) as archive:
            for name in archive.namelist():
                yield name, archive.read(name)
        return
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        yield str(path.relative_to(out)), path.read_bytes()


def test_no_planted_secret_reaches_any_file_of_the_crate(
    session: StoredRun, notebook_file: Path, tmp_path: Path
) -> None:
    """Secrets written as literals, nested keys, `--param`, positional tuples and calls,
    curl/mysql flags in shell escapes and argument lists, a URL password holding `/` and `@`,
    a short name, `%env`, a text artifact, and in the notebook file (a cell never run and an
    output): none is in any file of the crate — folder, zip, or with the notebook named by
    `--notebook` — exported by the real command line; nor is the short password's sha256."""
    exports = [
        (tmp_path / "crate", ()),
        (tmp_path / "crate.zip", ()),
        (tmp_path / "with-notebook", ("--notebook", str(notebook_file))),
    ]
    for out, extra in exports:
        done = cli(
            "export", session.run.run_id, "-f", "rocrate", "-o", str(out), *extra, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        everything = b"\n".join(data for _, data in crate_bytes(out))
        leaked = sorted(where for where, secret in SECRETS.items() if secret.encode() in everything)
        assert not leaked, f"{len(leaked)} of {len(SECRETS)} secrets in {out.name}: {leaked}"
        for part in SECRETS["URL password with / and @"].split("/"):
            assert part.encode() not in everything
        pw_hash = hashlib.sha256(SECRETS["short name pw"].encode()).hexdigest()
        assert pw_hash.encode() not in everything
        assert b"<redacted>" in everything
    given = nbformat.read(tmp_path / "with-notebook" / "train.ipynb", as_version=4)
    (cell,) = given.cells
    assert cell.source == 'token = "<redacted>"' and cell.outputs == []


def test_crate_holds_the_cells_as_they_ran_not_the_notebook_file(
    session: StoredRun, notebook_file: Path, tmp_path: Path, capsys: Any
) -> None:
    """The notebook file (edited after the run) is not copied: the crate carries the cells
    the session ran, up to and including the run, in execution order, as recorded (redacted),
    in a valid notebook that says what it is."""
    notebook_file.write_text(notebook_file.read_text() + " ", encoding="utf-8")  # edited since
    out = tmp_path / "crate"
    assert main(["export", session.run.run_id, "-f", "rocrate", "-o", str(out)]) == 0
    assert not (out / "train.ipynb").exists()
    names = [path.name for path in out.iterdir()]
    assert not any(name.endswith(".ipynb") and "recorded-cells" not in name for name in names)
    recorded = nbformat.read(out / f"recorded-cells-{session.run.run_id}.ipynb", as_version=4)
    nbformat.validate(recorded)
    sources = [cell.source for cell in recorded.cells]
    assert (
        len(sources)
        == len(CELLS) + 1
        == len({c.metadata.jupyter_prov4ml.run_id for c in recorded.cells})
    )
    assert sources[-1] == session.run.cell.source
    assert sources[0] == CELLS[0]
    assert "after_the_run" not in "".join(sources)
    counts = [cell.execution_count for cell in recorded.cells]
    assert counts == sorted(counts)
    assert "not the notebook file" in recorded.metadata.jupyter_prov4ml.what
    entity = rocrate.ROCrate(out).dereference(f"recorded-cells-{session.run.run_id}.ipynb")
    assert "as recorded" in entity["name"] and "redacted" in entity["description"]


def test_crate_holds_the_runs_artifacts(
    session: StoredRun, artifacts: Path, tmp_path: Path, capsys: Any
) -> None:
    """Artifacts the run logged are results of the run: a copied binary one as a file with
    the recorded sha256, a copied text one redacted (and said to be), one not copied by name
    and sha256 only — no file from outside the store, not even its path."""
    out = tmp_path / "crate"
    assert main(["export", session.run.run_id, "-f", "rocrate", "-o", str(out)]) == 0
    crate = rocrate.ROCrate(out)
    (action,) = crate.root_dataset["mentions"]
    results = {entity.id: entity for entity in action["result"]}
    recorded = {a.name: a for a in session.run.artifacts}

    model = results["artifacts/model.bin"]
    assert model["sha256"] == recorded["model.bin"].sha256 == file_sha256(out / model.id)

    config = results["artifacts/config.yaml"]
    text = (out / config.id).read_text()
    assert "lr: 0.1" in text and "epochs: 3" in text and "<redacted>" in text
    assert config["sha256"] == file_sha256(out / config.id) != recorded["config.yaml"].sha256
    assert "credentials redacted at export" in config["description"]
    assert recorded["config.yaml"].sha256 in config["description"]

    (weights,) = [e for e in results.values() if e.get("name") == "weights.pt"]
    assert weights.type == "CreativeWork" and weights.id.startswith("#")
    assert weights["sha256"] == file_sha256(artifacts / "weights.pt")
    assert "not copied" in weights["description"]
    assert not (out / "weights.pt").exists() and not (out / "artifacts" / "weights.pt").exists()
    assert str(artifacts) not in (out / "ro-crate-metadata.json").read_text()
    assert capsys.readouterr().err == ""  # nothing was left out or changed


def untrusted_copy(store: Path, run_id: str, victim: Path) -> None:
    """Edit a store as someone handing it over could: the run's data file, artifact copy and
    notebook point outside it (`..`, an absolute path); the index is rebuilt from the journal."""
    for journal in store.glob("sessions/*/journal.jsonl"):
        lines = []
        for line in journal.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "close" and event["run"]["run_id"] == run_id:
                run = event["run"]
                # (a run's record may be journaled first without its data files)
                for first in run["data_files"][:1]:
                    first["relpath"] = f"../{victim.parent.name}/{victim.name}"
                    run["data_files"].append({**first, "relpath": str(victim)})
                for artifact in run["artifacts"]:
                    if artifact["copied_to"]:
                        artifact["name"] = f"../../../../../{victim.parent.name}/{victim.name}"
                        artifact["copied_to"] = str(victim)
                run["cell"]["notebook_path"] = str(victim)
            lines.append(json.dumps(event))
        journal.write_text("\n".join(lines) + "\n")
    for index in store.glob("index.sqlite*"):
        index.unlink()


def test_paths_from_an_untrusted_store_never_copy_a_file_from_outside_it(
    session: StoredRun, store_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    """Data-file relpaths with `..` or absolute, artifact copies named outside the store and
    a notebook path elsewhere: none of those files gets into the crate; each is refused with
    one warning line, and the export still succeeds."""
    victim = tmp_path / "victim" / "id_rsa"
    victim.parent.mkdir()
    victim.write_text("VICTIM-PRIVATE-FILE-CONTENT\n")
    untrusted_copy(store_dir, session.run.run_id, victim)
    out = tmp_path / "crate"
    capsys.readouterr()
    assert main(["export", session.run.run_id, "-f", "rocrate", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    everything = b"\n".join(data for _, data in crate_bytes(out))
    assert b"VICTIM-PRIVATE-FILE-CONTENT" not in everything
    assert not any(p.name == "id_rsa" for p in out.rglob("*"))
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert sum("data file" in line and "refused" in line for line in warnings) == 2, err
    assert (
        sum("artifact" in line and "no copy of it inside the store" in line for line in warnings)
        == 2
    ), err
    rocrate.ROCrate(out)  # still a crate


@pytest.mark.parametrize("name", ["crate", "crate.zip"])
def test_exports_are_written_for_the_user_only(
    session: StoredRun, tmp_path: Path, capsys: Any, name: str
) -> None:
    """Whatever the umask, the crate's files are 0600 and its folders 0700 (a zip: 0600),
    also when an earlier export is overwritten."""
    out = tmp_path / name
    previous = os.umask(0o022)
    try:
        for _ in range(2):
            assert main(["export", session.run.run_id, "-f", "rocrate", "-o", str(out)]) == 0
    finally:
        os.umask(previous)
    paths = [out, *out.rglob("*")] if out.is_dir() else [out]
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
