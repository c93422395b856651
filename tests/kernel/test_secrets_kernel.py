"""No secret reaches the store, through a real kernel: `jupyter-prov4ml run` on a notebook
that meets credentials in its environment, its parameters and its variables."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import cli, deserialize_strict
from jupyter_prov4ml.redaction import REDACTED, looks_like_credential

pytestmark = pytest.mark.kernel

ALPHANUMERIC = string.ascii_letters + string.digits


def random_text(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def shaped_token() -> str:
    """Random, mixed case and digits: what the by-shape rule must catch."""
    while True:
        token = random_text(ALPHANUMERIC, 32)
        if looks_like_credential(token):
            return token


def plain_secret(label: str) -> str:
    """Lower-case words and hex: not credential-shaped, so only a name can give it away."""
    return f"{label}-opensesame-{secrets.token_hex(6)}"


def planted() -> dict[str, str]:
    """Every secret the notebook meets, by where it is planted."""
    return {
        # environment of the kernel, not allow-listed
        "env AWS_SECRET_ACCESS_KEY": random_text(ALPHANUMERIC + "/+", 40),
        "env GITHUB_TOKEN": "ghp_" + random_text(ALPHANUMERIC, 36),
        "env MY_SERVICE_PASSWORD": plain_secret("service"),
        "env SLURM_JOB_COMMENT": plain_secret("slurm-comment"),
        # environment, allow-listed names holding credential-shaped values
        "env SLURM_JOB_NAME": "Bearer " + shaped_token(),
        "env NUMEXPR_NUM_THREADS": "ghp_" + random_text(ALPHANUMERIC, 36),
        # parameters
        "param --param api_key": plain_secret("magic-param"),
        "param log_param token": plain_secret("api-param"),
        "param literal password": plain_secret("literal"),
        # variables and other code
        "variable secret_token": plain_secret("variable"),
        "variable innocent (shape)": shaped_token(),
        "%env SERVICE_TOKEN": plain_secret("env-magic"),
        "URL password": plain_secret("url"),
        "os.environ[API_KEY] =": plain_secret("environ"),
    }


# The %%provrun cell ends only once the journal holds a progress checkpoint with its parameters
# and one with its metrics (read by the cell from its own store), so that secrets reaching a
# checkpoint are checked too: a wait on the event itself, not a sleep racing the checkpointer.
WAIT_FOR_CHECKPOINTS = r"""
import glob


def journaled(key):
    pattern = os.path.join(os.environ["JUPYTER_PROV4ML_STORE"], "sessions", "*", "journal.jsonl")
    for path in glob.glob(pattern):
        with open(path) as journal:
            if any(line.startswith('{"event":"progress"') and key in line for line in journal):
                return True
    return False


deadline = time.monotonic() + 600
while not (journaled('"params"') and journaled('"metrics"')):
    assert time.monotonic() < deadline, "no progress checkpoint journaled"
    time.sleep(0.1)
"""


def notebook(secret: dict[str, str], snapshot: Path) -> Any:
    cells = [
        "%load_ext jupyter_prov4ml",
        f'secret_token = "{secret["variable secret_token"]}"\n'
        f'innocent = "{secret["variable innocent (shape)"]}"\n'
        "import os\n"
        'from_environment = os.environ["MY_SERVICE_PASSWORD"]\n'
        "width = 3",
        f"%env SERVICE_TOKEN {secret['%env SERVICE_TOKEN']}",
        f'os.environ["API_KEY"] = "{secret["os.environ[API_KEY] ="]}"\n'
        f'db_url = "postgresql://bob:{secret["URL password"]}@db.example.org:5432/runs"',
        f"%%provrun --name guarded --param api_key={secret['param --param api_key']}"
        " --param lr=0.1\n"
        f'password = "{secret["param literal password"]}"\n'
        "import time\n"
        "from jupyter_prov4ml import log_metric, log_param, track\n"
        f'log_param("token", "{secret["param log_param token"]}")\n'
        'log_param("note", innocent)\n'
        "for step in track(range(3)):\n"
        "    log_metric('loss', 1.0 / (step + 1))\n"
        f"{WAIT_FOR_CHECKPOINTS}\n"
        "total = len(secret_token) + len(innocent) + len(from_environment)",
        # a failure whose message carries a secret: only the exception's type may be kept
        "raise RuntimeError('cannot log in with ' + innocent + secret_token)",
        "%prov list",
        # a copy of the store while the kernel still holds the index open (its -wal and -shm)
        "%prov flush\n"
        "import shutil\n"
        f"shutil.copytree(os.environ['JUPYTER_PROV4ML_STORE'], {str(snapshot)!r})",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def store_text(store: Path) -> tuple[list[Path], bytes]:
    """Every file in the store as bytes, plus the decoded contents of the Parquet files
    (zstd-compressed, so their raw bytes could hide a string)."""
    import pyarrow.parquet as pq

    files = sorted(p for p in store.rglob("*") if p.is_file())
    chunks = [p.read_bytes() for p in files]
    for path in files:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            chunks.append(repr(table.schema.metadata).encode())
            chunks.append(json.dumps(table.to_pydict(), default=repr).encode())
    chunks.append("\n".join(str(p.relative_to(store)) for p in files).encode())
    return files, b"\n".join(chunks)


def test_no_planted_secret_reaches_any_store_file(tmp_path: Path) -> None:
    """Secrets in the kernel's environment, in parameters (magic line, `log_param`, literal
    assignment), in variables (by name and by shape), in `%env`, `os.environ[...] =`, a URL
    and an exception message appear in no file of the store — journal, PROV-JSON, Parquet,
    SQLite index — nor in what the CLI prints from it; allow-listed environment values do
    appear on the PROV environment entity."""
    secret = planted()
    work = tmp_path / "work"
    work.mkdir()
    path = work / "secrets.ipynb"
    snapshot = tmp_path / "store-while-running"
    nbformat.write(notebook(secret, snapshot), path)
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_PROV4ML")}
    env.update({key.split()[1]: value for key, value in secret.items() if key.startswith("env ")})
    env.update({"OMP_NUM_THREADS": "3", "SLURM_JOB_ID": "424242", "PYTHONHASHSEED": "0"})

    done = cli(
        "run", str(path), "-o", str(tmp_path / "executed.ipynb"), "--store", str(store),
        "--allow-errors", cwd=work, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files, after_run = store_text(store)
    live_files, while_running = store_text(snapshot)
    listed = cli("list", "--json", "--store", str(store), cwd=work, env=env)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    (provrun,) = [r for r in runs if r["kind"] == "provrun"]
    shown = cli("show", provrun["run_id"], "--store", str(store), cwd=work, env=env)
    exported = cli("export", provrun["run_id"], "--store", str(store), cwd=work, env=env)
    assert shown.returncode == exported.returncode == 0, shown.stderr + exported.stderr
    _, after_cli = store_text(store)

    checkpoints = [
        json.loads(line)
        for journal in store.glob("sessions/*/journal.jsonl")
        for line in journal.read_text().splitlines()
        if line.startswith('{"event":"progress"')
    ]
    assert any("params" in c for c in checkpoints), "no checkpoint of parameters was checked"
    assert any("metrics" in c for c in checkpoints), "no checkpoint of metrics was checked"
    suffixes = {p.suffix for p in files}
    assert {".jsonl", ".json", ".parquet"} <= suffixes, suffixes
    assert any(p.name.endswith((".sqlite", ".db", ".sqlite3")) for p in files), files
    assert any(p.name.endswith("-wal") for p in live_files), live_files
    everything = b"\n".join(
        [after_run, while_running, after_cli, listed.stdout.encode(), shown.stdout.encode()]
    )
    everything += exported.stdout.encode()
    leaked = {
        where: value
        for where, value in secret.items()
        for needle in (value, value.removeprefix("Bearer "))
        if needle.encode() in everything
    }
    assert not leaked, f"{len(leaked)} of {len(secret)} secrets in the store: {sorted(leaked)}"

    # What is meant to be kept is kept: allow-listed values, redaction markers, the failure.
    document = json.loads(Path(provrun["prov_path"]).read_text())
    (environment,) = [
        e for e in document["entity"].values() if "p4m:env_python_version" in e
    ]  # fmt: skip
    assert environment["p4m:env_OMP_NUM_THREADS"] == "3"
    assert environment["p4m:env_SLURM_JOB_ID"] == "424242"
    assert environment["p4m:env_PYTHONHASHSEED"] == "0"
    assert environment["p4m:env_SLURM_JOB_NAME"] == REDACTED
    assert environment["p4m:env_NUMEXPR_NUM_THREADS"] == REDACTED
    captured = {key.removeprefix("p4m:env_") for key in environment if key.startswith("p4m:env_")}
    assert not captured & {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_SERVICE_PASSWORD"}
    assert "SLURM_JOB_COMMENT" not in captured
    deserialize_strict(Path(provrun["prov_path"]))
    assert set(provrun["params"]) >= {"api_key", "token", "password", "lr"}
    assert [r["status"] for r in runs].count("failed") == 1
