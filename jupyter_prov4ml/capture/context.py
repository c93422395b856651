"""The context a run's result depends on beyond the session's facts: every installed
distribution, the versions of the modules the user imported, the git checkout the notebook
lives in, and the CUDA stack.

The package list and git are slow (tens to hundreds of milliseconds): `ContextProbe` in the
kernel reads them on a thread of its own. What is read at run time here (imported versions,
CUDA) only looks at objects already in memory and imports nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from jupyter_prov4ml.redaction import redact_source

# git answers in milliseconds; a hung network file system must not keep the probe forever.
GIT_TIMEOUT_S = 10.0
# A diff larger than this is hashed and stored cut (a notebook's outputs can be megabytes).
MAX_DIFF_BYTES = 4 * 2**20
# At most this many imported modules become PROV attributes (the full list is a file).
MAX_IMPORTED = 200
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Packages:
    """Every installed distribution as `name==version` lines, sorted, and by name."""

    text: str
    versions: Mapping[str, str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class GitRead:
    """What `git` said about a checkout: its state and the (redacted) diff text."""

    commit: str
    branch: str | None
    dirty: bool
    diff_sha256: str | None
    diff_redacted: bytes


def installed_packages() -> Packages:
    """Every distribution `importlib.metadata` finds on `sys.path` (the first of duplicates,
    as imports would see it), sorted by normalised name."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        found = _from_folder_name(dist)
        if found is None:
            # Parsing METADATA costs ~0.4 ms a distribution (80 ms for 200): only when the
            # folder's name does not say it.
            name = dist.metadata["Name"] if dist.metadata is not None else None
            if not name:
                continue
            found = name, str(dist.version)
        versions.setdefault(normalized(found[0]), found[1])
    text = "".join(f"{name}=={versions[name]}\n" for name in sorted(versions))
    return Packages(text, versions)


def _from_folder_name(dist: metadata.Distribution) -> tuple[str, str] | None:
    """Name and version from a wheel's `name-version.dist-info` folder (the wheel spec
    escapes `-` in both, so the one `-` separates them); None for any other form."""
    path = getattr(dist, "_path", None)
    if not isinstance(path, Path) or path.suffix != ".dist-info":
        return None
    name, dash, version = path.stem.partition("-")
    if not dash or not name or not version or "-" in version:
        return None
    return name, version


def normalized(name: str) -> str:
    """A distribution or module name as PEP 503 compares them (`Foo_Bar` → `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_versions(
    modules: Mapping[str, Any], known: Mapping[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """(top-level module, version) for the third-party modules imported now: the module's
    own `__version__`, else the installed distribution of the same name. Cheap: reads
    attributes of modules already in memory (about 0.5 ms for 2,000 modules)."""
    stdlib = sys.stdlib_module_names
    found: dict[str, str] = {}
    for name, module in list(modules.items()):
        if "." in name or name.startswith("_") or name in stdlib or module is None:
            continue
        # From the module's own namespace: a module `__getattr__` may warn (jsonschema's
        # `__version__` is deprecated) or import things (lazy modules).
        namespace = getattr(module, "__dict__", None)
        version = namespace.get("__version__") if isinstance(namespace, dict) else None
        if not isinstance(version, str) and known is not None:
            version = known.get(normalized(name))
        if isinstance(version, str) and _VERSION.match(version):
            found[name] = version
    return tuple(sorted(found.items()))[:MAX_IMPORTED]


def read_git(folder: Path, git: str | None = None) -> GitRead | None:
    """The git checkout holding `folder`, or None where there is none, git is missing, or git
    fails (never raises for those). The diff is against HEAD, staged and not, credentials
    redacted before it is stored; its sha256 is of git's own output."""
    git = git or shutil.which("git")
    if git is None or not folder.is_dir():
        return None
    commit = _git(git, folder, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None
    branch = _git(git, folder, "symbolic-ref", "--quiet", "--short", "HEAD")
    status = _git(git, folder, "status", "--porcelain", "--untracked-files=no")
    diff = _git_bytes(git, folder, "diff", "--no-color", "--no-ext-diff", "HEAD")
    dirty = bool(status) or bool(diff)
    digest = hashlib.sha256(diff).hexdigest() if diff else None
    shown = diff[:MAX_DIFF_BYTES].decode("utf-8", "replace") if diff else ""
    return GitRead(
        commit=commit.strip(),
        branch=branch.strip() if branch else None,
        dirty=dirty,
        diff_sha256=digest,
        diff_redacted=redact_source(shown).encode("utf-8") if shown else b"",
    )


def _git(git: str, folder: Path, *args: str) -> str | None:
    out = _git_bytes(git, folder, *args, quiet_fail=True)
    return None if out is None else out.decode("utf-8", "replace")


def _git_bytes(git: str, folder: Path, *args: str, quiet_fail: bool = False) -> Any:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            [git, *args],
            cwd=folder,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None if quiet_fail else b""
    if done.returncode != 0:
        return None if quiet_fail else b""
    return done.stdout


def accelerator_versions(
    modules: Mapping[str, Any], driver_versions: Iterable[tuple[str, str | None]] = ()
) -> tuple[tuple[str, str], ...]:
    """CUDA, cuDNN and driver versions where an imported torch or NVML knows them; imports
    nothing (torch only if the user imported it) and never initialises CUDA."""
    found: dict[str, str] = {}
    torch = modules.get("torch")
    if torch is not None:
        try:
            cuda = getattr(getattr(torch, "version", None), "cuda", None)
            if cuda:
                found["torch_cuda_version"] = str(cuda)
            hip = getattr(getattr(torch, "version", None), "hip", None)
            if hip:
                found["torch_hip_version"] = str(hip)
            cudnn = getattr(getattr(torch, "backends", None), "cudnn", None)
            # cudnn.version() loads the library only when torch was built with it (not CUDA).
            if cuda and cudnn is not None and callable(getattr(cudnn, "version", None)):
                version = cudnn.version()
                if version:
                    found["cudnn_version"] = str(version)
        # A broken or partial torch import must not cost the run its record.
        except Exception:  # noqa: BLE001
            pass
    for driver, cuda_driver in driver_versions:
        if driver:
            found.setdefault("gpu_driver_version", driver)
        if cuda_driver:
            found.setdefault("cuda_driver_version", cuda_driver)
    return tuple(found.items())
