"""Environment capture is an allow-list; the extension writes nowhere but its store."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from conftest import deserialize_strict, displayed, dispose_shell, extension_of
from jupyter_prov4ml.capture.environment import (
    CAPTURED_VARIABLES,
    MAX_VALUE_CHARS,
    captured_environment,
)
from jupyter_prov4ml.provmodel import session_document
from jupyter_prov4ml.records import SessionInfo
from jupyter_prov4ml.redaction import REDACTED
from jupyter_prov4ml.settings import STORE_ENV
from jupyter_prov4ml.store.codec import session_from_dict, session_to_dict

GITHUB_TOKEN = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5"


def test_only_listed_names_are_captured() -> None:
    """Variables outside the allow-list never appear, whatever they hold, including scheduler
    variables that share an allowed prefix; listed ones that are set appear once."""
    environ = {
        "OMP_NUM_THREADS": "3",
        "SLURM_JOB_ID": "424242",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HOME": "/home/alice",
        "PATH": "/usr/bin",
        "AWS_SECRET_ACCESS_KEY": "plain-words-but-secret",
        "SLURM_JOB_COMMENT": "db password is hunter2",
        "SLURM_JOB_ACCOUNT": "proj-123",
        "OMP_NUM_THREADS_EXTRA": "9",
    }
    captured = dict(captured_environment(environ))
    assert captured["OMP_NUM_THREADS"] == "3"
    assert captured["SLURM_JOB_ID"] == "424242"
    assert captured["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert set(captured) - {"python_version", "python_implementation", "python_executable"} == {
        "OMP_NUM_THREADS",
        "SLURM_JOB_ID",
        "CUDA_VISIBLE_DEVICES",
    }
    assert "hunter2" not in repr(captured) and "plain-words" not in repr(captured)
    assert len(captured_environment(environ)) == len(captured), "each name once"


def test_python_facts_come_from_the_interpreter() -> None:
    """Version, implementation and executable describe this interpreter, not the mapping."""
    captured = dict(captured_environment({"PYTHON_VERSION": "9.9"}))
    assert captured["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert captured["python_implementation"] == platform.python_implementation()
    assert captured["python_executable"] in (sys.executable, REDACTED)


@pytest.mark.parametrize(
    "value",
    [
        GITHUB_TOKEN,
        "Bearer abcdefghijklmnop0123",
        "sk-live-0123456789abcdef",
        "AKIAIOSFODNN7EXAMPLE",
        "https://bob:opensesame@db.example.org/x",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
    ],
)
def test_credential_shaped_values_of_allowed_names_are_redacted(value: str) -> None:
    """An allowed name set to something shaped like a credential is stored as `<redacted>`."""
    captured = dict(captured_environment({"SLURM_JOB_NAME": value, "OMP_NUM_THREADS": value}))
    assert captured["SLURM_JOB_NAME"] == captured["OMP_NUM_THREADS"] == REDACTED


def test_gpu_uuids_are_kept_in_device_lists() -> None:
    """`CUDA_VISIBLE_DEVICES` may list GPU or MIG UUIDs: random-looking but not secret, so a
    well-formed device list is kept; anything else in it is still checked for credentials."""
    uuid = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
    mig = "MIG-GPU-8932f937-d72c-4106-c12f-20bd9faed9f6/1/0"
    captured = dict(
        captured_environment(
            {
                "CUDA_VISIBLE_DEVICES": f"{uuid},1",
                "NVIDIA_VISIBLE_DEVICES": mig,
                "HIP_VISIBLE_DEVICES": GITHUB_TOKEN,
            }
        )
    )
    assert captured["CUDA_VISIBLE_DEVICES"] == f"{uuid},1"
    assert captured["NVIDIA_VISIBLE_DEVICES"] == mig
    assert captured["HIP_VISIBLE_DEVICES"] == REDACTED


def test_values_are_capped() -> None:
    """A long value (a node list) keeps its head, ends in `…`, and is at most the cap."""
    nodes = ",".join(f"node{i:04d}" for i in range(200))
    captured = dict(captured_environment({"SLURM_JOB_NODELIST": nodes}))
    stored = captured["SLURM_JOB_NODELIST"]
    assert len(stored) == MAX_VALUE_CHARS
    assert stored.endswith("…") and nodes.startswith(stored[:-1])


def test_allow_list_has_no_credential_names() -> None:
    """No listed name is one the redaction would hide by name (it would always be redacted)."""
    from jupyter_prov4ml.redaction import is_secret_name

    assert not [name for name in CAPTURED_VARIABLES if is_secret_name(name)]
    assert len(set(CAPTURED_VARIABLES)) == len(CAPTURED_VARIABLES)


def session_info(environment: tuple[tuple[str, str], ...]) -> SessionInfo:
    return SessionInfo(
        session_id="20240101T000000-abcdef",
        user="alice",
        started_at_unix_s=1_700_000_000.0,
        software=(("python", "3.12.0"),),
        hostname="node1",
        platform="Linux",
        cpu_model="cpu",
        cpu_count_logical=4,
        memory_total_bytes=1 << 30,
        environment=environment,
    )


def test_environment_round_trips_through_the_journal_and_prov(tmp_path: Path) -> None:
    """The captured pairs survive the journal as tuples, old journals without them still read,
    and they are attributes of the PROV environment entity that `prov` reads back."""
    info = session_info(captured_environment({"OMP_NUM_THREADS": "3", "SLURM_JOB_ID": "42"}))
    encoded = json.loads(json.dumps(session_to_dict(info)))
    assert session_from_dict(encoded) == info
    del encoded["environment"]
    assert session_from_dict(encoded).environment == ()

    path = tmp_path / "session.prov.json"
    path.write_text(session_document([], info).serialize(format="json"))
    document = json.loads(path.read_text())
    (environment,) = document["entity"].values()
    assert environment["p4m:env_OMP_NUM_THREADS"] == "3"
    assert environment["p4m:env_SLURM_JOB_ID"] == "42"
    assert environment["p4m:env_python_version"] == platform.python_version()
    deserialize_strict(path)


# -- nothing outside the store is written --------------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`: relative path → (size, mtime in ns)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def separate_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A shell whose HOME, IPYTHONDIR, working directory, temp folder and store are five
    separate folders; history in memory, displays captured."""
    folders = {name: tmp_path / name for name in ("home", "ipython", "work", "tmp", "store")}
    for path in folders.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("IPYTHONDIR", str(folders["ipython"]))
    monkeypatch.setenv("TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folders["home"] / ".cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(folders["tmp"]))
    monkeypatch.setenv(STORE_ENV, str(folders["store"]))
    monkeypatch.chdir(folders["work"])
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config, display_pub_class=CapturingDisplayPublisher)
    folders["shell"] = shell  # type: ignore[assignment]
    yield folders
    dispose_shell(shell)


def test_nothing_is_written_outside_the_store(separate_folders: dict[str, Any]) -> None:
    """Loading, plain cells, a %%provrun with metrics, `%prov list/show/graph` and unloading
    change files only under the store: HOME, IPYTHONDIR, the working directory and the temp
    folder are exactly as they were."""
    shell = separate_folders.pop("shell")
    outside = {name: path for name, path in separate_folders.items() if name != "store"}
    before = {name: tree(path) for name, path in outside.items()}

    assert shell.run_cell("%load_ext jupyter_prov4ml").success
    assert shell.run_cell("x = 21", store_history=True, cell_id="a").success
    assert shell.run_cell("y = x * 2\ny", store_history=True, cell_id="b").success
    provrun = (
        "%%provrun --name outside --param lr=0.1\n"
        "from jupyter_prov4ml import log_metric, track\n"
        "for epoch in track(range(3)):\n"
        "    log_metric('loss', 1.0 / (epoch + 1))\n"
    )
    assert shell.run_cell(provrun, store_history=True, cell_id="c").success
    assert shell.run_cell("table = %prov list", store_history=True).success
    run_id = shell.user_ns["table"].rows[-1]["run_id"]
    assert shell.run_cell(f"%prov show {run_id}", store_history=True).success
    assert shell.run_cell("%prov graph", store_history=True).success
    assert extension_of(shell).writer.flush(timeout_s=30)
    assert any("outside" in b.get("text/plain", "") for b in displayed(shell))
    assert shell.run_cell("%unload_ext jupyter_prov4ml").success

    store = separate_folders["store"]
    assert list(store.glob("sessions/*/journal.jsonl")), "the store was written"
    for name, path in outside.items():
        after = tree(path)
        changed = sorted(
            p for p in set(before[name]) | set(after) if before[name].get(p) != after.get(p)
        )
        assert not changed, f"written outside the store, under {name}: {changed}"


def test_readme_lists_the_allow_list() -> None:
    """Users can see exactly which variables are recorded: the README names every one."""
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert not [name for name in CAPTURED_VARIABLES if f"`{name}`" not in readme]
