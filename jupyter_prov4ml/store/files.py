"""How the store writes a file: atomically, or opened for appending, with the store's modes
(0700 folders and 0600 files unless configured), which the umask may not narrow."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from jupyter_prov4ml.settings import PRIVATE, StoreModes


def atomic_write_bytes(path: Path, data: bytes, modes: StoreModes = PRIVATE) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one."""
    make_private_dirs(path.parent, modes)
    # mkstemp creates the file 0600: provenance stays readable by the user only.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if not modes.private:
            os.fchmod(fd, modes.file)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_store_file(path: Path, flags: int, modes: StoreModes = PRIVATE) -> int:
    """`os.open` with O_CREAT: a new file gets the store's file mode, which the umask may not
    narrow (a store shared with the group stays shared)."""
    fd = os.open(path, flags | os.O_CREAT, modes.file)
    if not modes.private:
        os.fchmod(fd, modes.file)
    return fd


def make_private_dirs(path: Path, modes: StoreModes = PRIVATE) -> None:
    """`mkdir -p` with new folders readable by the user only (0700), or as configured."""
    if path.is_dir():
        return
    make_private_dirs(path.parent, modes)
    try:
        path.mkdir(mode=modes.directory)
    except FileExistsError:
        return
    if not modes.private:
        os.chmod(path, modes.directory)  # the umask must not take the group's bits away


def write_private(path: Path, data: bytes) -> None:
    """Write an export the user asked for (`-o FILE`): created 0600, like the store's files,
    whatever the umask; an existing file is replaced, its mode narrowed to 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)
