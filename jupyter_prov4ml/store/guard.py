"""Whether a store folder is ours to record into.

A store someone else prepared (a world-writable `prov4ml/` another user made, holding her own
world-readable index) would let her read, or rewrite, every record. Before a kernel records
into a store, the store's folder, its `sessions/` folder and its index must belong to the user
and be no wider than the configured modes (a store shared with a group on purpose, through
`JUPYTER_PROV4ML_STORE_MODE`, may belong to a teammate); otherwise the kernel records into a
private store of the user's own and says so loudly. Reading a store (the CLI) is allowed
whoever owns it: what is read is untrusted anyway; the CLI only declines to write (recover)
into it. A store of the user's own that others may only read (a folder made with `mkdir`) is
narrowed to the configured mode instead."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from jupyter_prov4ml.settings import StoreModes

_CHECKED = (("", True), ("sessions", True), ("index.sqlite", False))


def store_problems(root: Path, modes: StoreModes) -> list[str]:
    """What makes `root` unsafe to record into (empty: nothing; a store not made yet is fine).
    Links are not followed: a link in place of the store or its parts is a problem too."""
    if not hasattr(os, "getuid"):  # pragma: no cover - Windows has no such owners
        return []
    problems = []
    for name, is_folder in _CHECKED:
        path = root / name if name else root
        try:
            info = os.lstat(path)
        except OSError:
            continue  # not there (yet), or not a folder: the writer says if it cannot write
        allowed = modes.directory if is_folder else modes.file
        if stat.S_ISLNK(info.st_mode):
            problems.append(f"{path} is a symbolic link")
        elif info.st_uid != os.getuid() and modes.private:
            # A store shared on purpose (JUPYTER_PROV4ML_STORE_MODE) may be a teammate's.
            problems.append(f"{path} belongs to another user (uid {info.st_uid})")
        elif (mode := stat.S_IMODE(info.st_mode)) & ~allowed & 0o777:
            if mode & ~allowed & 0o022 or info.st_uid != os.getuid():
                # Others could have written into it already: nothing there can be trusted.
                problems.append(f"{path} has mode {mode:o}, wider than {allowed:o}")
            else:
                # Ours and only readable by others (a folder made with `mkdir`): narrowed
                # to what we would have made it.
                narrow(path, mode & allowed)
    return problems


def narrow(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):  # left as it was; the store still works
        os.chmod(path, mode)


def private_fallback(environ: Mapping[str, str]) -> Path:
    """The user's own store, used instead of one that is not safe to record into."""
    data_home = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "jupyter_prov4ml" / "prov4ml"
