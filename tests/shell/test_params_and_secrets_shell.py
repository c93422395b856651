"""Through a real IPython shell: which assignments become parameters (settings, not working
state; never a memory address), and credentials in the forms redaction must also catch —
nested keys, positional tuples and calls, shell escapes, URL passwords with `/` or `@`,
short names — leave no trace in the store, not even a hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from conftest import closed_runs, extension_of, journal_events


def flush(shell: Any) -> None:
    assert extension_of(shell).writer.flush(timeout_s=30)


def store_bytes(store: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file())


def test_parameters_are_settings_and_carry_no_address(loaded: Any, store_dir: Path) -> None:
    """In a %%provrun, literal settings are parameters; an accumulator, a list the loop
    fills and empty initialisers are not; objects given to `log_param` are stored without
    their memory address (`<object object>`), and no stored file holds one."""
    cell = (
        "%%provrun --name params --no-graph --no-live\n"
        "from jupyter_prov4ml import log_param\n"
        "lr = 0.01\n"
        "seed = 0\n"
        "layers = [64, 128]\n"
        "acc = 0.0\n"
        "losses = []\n"
        "seen = {}\n"
        "for step in range(3):\n"
        "    acc += lr * step\n"
        "    losses.append(acc)\n"
        "class Net:\n"
        "    pass\n"
        "log_param('sentinel', object())\n"
        "log_param('model', Net())\n"
        "log_param('init', Net.__init__)\n"
        "log_param('hook', lambda x: x)\n"
        "log_param('nested', [object(), {'net': Net()}])\n"
    )
    assert loaded.run_cell(cell, store_history=True).success
    flush(loaded)
    params = {p["name"]: p["value"] for p in closed_runs(store_dir)[-1]["params"]}
    assert {"lr", "seed", "layers"} <= set(params)
    assert not {"acc", "losses", "seen", "step"} & set(params)
    assert params["sentinel"] == "<object object>"
    assert params["model"] == "<__main__.Net object>"
    assert params["nested"] == "[<object object>, {'net': <__main__.Net object>}]"
    assert "<lambda>" in params["hook"]
    for value in params.values():
        assert " at 0x" not in str(value)
    assert b" at 0x" not in store_bytes(store_dir)


def secret(label: str) -> str:
    """Lower-case words and hex: not credential-shaped, so only its form gives it away."""
    return f"{label}-opensesame-{os.urandom(4).hex()}"


def test_credentials_in_values_escapes_and_short_names_leave_no_trace(
    loaded: Any, store_dir: Path
) -> None:
    """Nested credential keys (a literal and a `log_param` dict), an `auth=` tuple, a
    `HTTPBasicAuth(...)` call, curl and mysql flags in shell escapes, a URL password with `/`
    and `@`, and `pw`/`pwd`/`db_pass` variables: no secret, and no sha256 of one, is in any
    file of the store; the redacted variables keep only their type."""
    s = {name: secret(name) for name in ("dict", "logged", "tuple", "call", "curl", "mysql")}
    s |= {"url": secret("url") + "/x@y", "pw": secret("pw"), "pwd": secret("pwd")}
    s["db_pass"] = secret("db-pass")
    cells = [
        "def HTTPBasicAuth(user, password):\n    return (user, password)",
        f'config = {{"lr": 0.1, "db_password": "{s["dict"]}"}}',
        f'auth = ("bob", "{s["tuple"]}")',
        f'creds = HTTPBasicAuth("bob", "{s["call"]}")',
        f"!true --user bob:{s['curl']} https://example.org",
        f"!mysql -u root -p{s['mysql']} -e 'select 1' 2>/dev/null || true",
        f'db_url = "postgresql://bob:{s["url"]}@db.example.org/runs"',
        f'pw = "{s["pw"]}"\npwd = "{s["pwd"]}"\ndb_pass = "{s["db_pass"]}"',
        "%%provrun --name guarded --no-graph --no-live\n"
        "from jupyter_prov4ml import log_param\n"
        f'settings = {{"batch": 8, "db": {{"password": "{s["logged"]}"}}}}\n'
        "log_param('settings', settings)\n"
        "log_param('config', config)\n",
    ]
    for source in cells:
        assert loaded.run_cell(source, store_history=True).success, source
    flush(loaded)
    stored = store_bytes(store_dir)
    leaked = sorted(name for name, value in s.items() if value.encode() in stored)
    assert not leaked, f"in the store: {leaked}"
    hashes = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in s.items()}
    assert not [name for name, digest in hashes.items() if digest.encode() in stored]
    variables = {
        v["name"]: v
        for event in journal_events(store_dir)
        if event["event"] == "close"
        for v in event["run"].get("variables", ())
    }
    for name in ("pw", "pwd", "db_pass", "auth", "creds", "db_url"):
        assert variables[name]["value_sha256"] is None, name
    params = {p["name"]: p["value"] for p in closed_runs(store_dir)[-1]["params"]}
    assert "'batch': 8" in params["settings"] and "<redacted>" in params["settings"]
    assert "'lr': 0.1" in params["config"] and "<redacted>" in params["config"]
