"""Reads the slow part of a run's context — every installed distribution and the git
checkout — once per session, on a thread of its own started when the `%load_ext` cell ends.
The first run that ends writes the package list and the (redacted) git diff into the store,
named by their sha256 (only then: a session without runs leaves no such files, and nothing
is written behind the user's back, e.g. after `%unload_ext`).

A `%%provrun` takes the result when it ends (waiting at most `WAIT_S` for a probe still
running) and adds what only run time knows: the versions of the modules imported by then,
and CUDA as torch or NVML knows it. Nothing here raises into a run: a failed probe leaves
the context without what it could not read.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_prov4ml.capture.context import (
    GitRead,
    Packages,
    accelerator_versions,
    imported_versions,
    installed_packages,
    read_git,
)
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import GitState, RunContext
from jupyter_prov4ml.store.files import atomic_write_bytes
from jupyter_prov4ml.store.layout import Store

# The longest the end of a run waits for a probe still reading (it takes ~10-100 ms).
WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class _Written:
    """Where the probe's files are in one store."""

    root: Path
    packages_relpath: str | None
    diff_relpath: str | None


class ContextProbe:
    """One session's package list and git state, read once in the background."""

    def __init__(self, session_id: str, folder: Path, notices: Notices) -> None:
        self.session_id = session_id
        self.folder = folder
        self.notices = notices
        self.packages: Packages | None = None
        self.git: GitRead | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._written: _Written | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Read on a daemon thread: the package list (~4 ms) and git (four subprocesses,
        6-80 ms)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._probe, name="jupyter-prov4ml-context", daemon=True
        )
        try:
            self._thread.start()
        # At interpreter shutdown no thread can start: runs then go without these facts.
        except RuntimeError:
            self._done.set()

    def _probe(self) -> None:
        try:
            self.packages = installed_packages()
        except Exception as error:  # noqa: BLE001 - a broken distribution's metadata
            self.notices.warn("packages", f"the installed packages could not be listed ({error!r})")
        try:
            self.git = read_git(self.folder)
        except Exception as error:  # noqa: BLE001 - never fail a session for git
            self.notices.warn("git", f"the git state could not be read ({error!r})")
        finally:
            self._done.set()

    def _write(self, store: Store) -> _Written:
        """The probe's files in `store` (written there once, by the first run that ends;
        content-addressed: a few kB, one fsync each)."""
        written = self._written
        if written is not None and written.root == store.root:
            return written
        folder = store.session_dir(self.session_id) / "environment"
        packages = diff = None
        if self.packages is not None:
            data = self.packages.text.encode("utf-8")
            packages = self._put(store, folder, "packages", ".txt", data)
        if self.git is not None and self.git.diff_redacted:
            diff = self._put(store, folder, "git-diff", ".patch", self.git.diff_redacted)
        self._written = _Written(store.root, packages, diff)
        return self._written

    @staticmethod
    def _put(store: Store, folder: Path, stem: str, suffix: str, data: bytes) -> str:
        path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        # Written even if present: what is there (a store is untrusted) may not be ours.
        atomic_write_bytes(path, data, store.modes)
        return store.relpath(path)

    def context(
        self,
        store: Store,
        modules: Mapping[str, Any],
        drivers: Iterable[tuple[str, str | None]] = (),
    ) -> RunContext:
        """The context of a run ending now."""
        if self._thread is not None:
            self._done.wait(WAIT_S)
        packages = self.packages if self._done.is_set() else None
        git = self.git if self._done.is_set() else None
        written: _Written | None = None
        if self._done.is_set():
            try:
                written = self._write(store)
            except OSError as error:
                self.notices.warn("environment-files", f"environment files not written ({error})")
        return RunContext(
            packages_sha256=packages.sha256 if packages is not None else None,
            packages_relpath=written.packages_relpath if written is not None else None,
            packages_count=len(packages.versions) if packages is not None else 0,
            imported=imported_versions(modules, packages.versions if packages else None),
            git=None
            if git is None
            else GitState(
                commit=git.commit,
                branch=git.branch,
                dirty=git.dirty,
                diff_sha256=git.diff_sha256,
                diff_relpath=written.diff_relpath if written is not None else None,
            ),
            accelerator=accelerator_versions(modules, drivers),
        )
