"""The RO-Crate trial through a real kernel: a notebook run headlessly with `jupyter-prov4ml
run` meets credentials in many forms, prints and raises with them; its run exported as an
RO-Crate (with and without the executed notebook) holds none of them, in any file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import cli

pytestmark = pytest.mark.kernel


def secret(label: str) -> str:
    """Lower-case words and hex: not credential-shaped, so only its form gives it away."""
    return f"{label}-opensesame-{os.urandom(4).hex()}"


def planted() -> dict[str, str]:
    names = [
        "literal password",
        "nested dict key",
        "log_param nested",
        "--param",
        "auth tuple",
        "positional call",
        "curl -u",
        "curl --user",
        "mysql -p",
        "mysql --password",
        "argv --password",
        "short pw",
        "short pwd",
        "%env",
        "os.environ",
        "text artifact",
    ]
    found = {name: secret(name.split()[0].strip("-%")) for name in names}
    found["URL password with / and @"] = secret("url") + "/x@y"
    return found


def notebook(s: dict[str, str], work: Path) -> nbformat.NotebookNode:
    (work / "config.yaml").write_text(f"lr: 0.1\npassword: {s['text artifact']}\n")
    cells = [
        "%load_ext jupyter_prov4ml",
        "def HTTPBasicAuth(user, password):\n    return (user, password)",
        f'auth = ("bob", "{s["auth tuple"]}")\n'
        f'creds = HTTPBasicAuth("bob", "{s["positional call"]}")',
        f"!true -u bob:{s['curl -u']} https://example.org\n"
        f"!true --user bob:{s['curl --user']} https://example.org",
        f"!mysql -u root -p{s['mysql -p']} -e 'select 1' 2>/dev/null || true\n"
        f"!mysql --password={s['mysql --password']} 2>/dev/null || true",
        "import os, subprocess\n"
        f'done = subprocess.run(["true", "--password", "{s["argv --password"]}"])\n'
        f'os.environ["DB_PASSWORD"] = "{s["os.environ"]}"',
        f'db_url = "postgresql://bob:{s["URL password with / and @"]}@db.example.org/runs"',
        f'pw = "{s["short pw"]}"\npwd = "{s["short pwd"]}"',
        f"%env DB_PW {s['%env']}",
        f"%%provrun --name crated --no-graph --no-live --param api_key={s['--param']}\n"
        "from jupyter_prov4ml import log_artifact, log_param\n"
        f'password = "{s["literal password"]}"\n'
        f'config = {{"lr": 0.1, "db_password": "{s["nested dict key"]}"}}\n'
        f'log_param("settings", {{"db": {{"password": "{s["log_param nested"]}"}}}})\n'
        'log_artifact("config.yaml", copy=True)\n'
        "print(pw)\n"
        'raise RuntimeError("cannot log in with " + pwd)',
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def crate_bytes(out: Path) -> bytes:
    if out.suffix == ".zip":
        with zipfile.ZipFile(out) as archive:
            return b"\n".join(archive.read(name) for name in archive.namelist())
    return b"\n".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def test_no_planted_secret_reaches_the_crate(tmp_path: Path) -> None:
    """Every planted secret is in the executed notebook on disk (the trial's premise) and in
    none of the crate's files — folder, zip, or with `--notebook` naming the executed copy,
    whose outputs (a printed secret, a traceback) are left out."""
    s = planted()
    work = tmp_path / "work"
    work.mkdir()
    path = work / "trial.ipynb"
    nbformat.write(notebook(s, work), path)
    store, executed = tmp_path / "store", tmp_path / "executed.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_PROV4ML")}
    done = cli(
        "run", str(path), "-o", str(executed), "--store", str(store), "--allow-errors",
        cwd=work, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    on_disk = executed.read_bytes()
    # in its sources, and printed (`print(pw)`) and raised (a traceback) in its outputs
    assert s["short pw"].encode() in on_disk and s["short pwd"].encode() in on_disk
    listed = cli("list", "--json", "--store", str(store), cwd=work, env=env)
    (run_id,) = [line.split('"run_id": "')[1].split('"')[0] for line in listed.stdout.split("{")
                 if '"kind": "provrun"' in line]  # fmt: skip
    outputs = [
        (tmp_path / "crate", ()),
        (tmp_path / "crate.zip", ()),
        (tmp_path / "with-notebook", ("--notebook", str(executed))),
    ]
    for out, extra in outputs:
        exported = cli(
            "export", run_id, "-f", "rocrate", "-o", str(out), "--store", str(store), *extra,
            cwd=work, env=env,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        everything = crate_bytes(out)
        leaked = sorted(where for where, value in s.items() if value.encode() in everything)
        assert not leaked, f"{len(leaked)} of {len(s)} secrets in {out.name}: {leaked}"
        assert b"<redacted>" in everything
