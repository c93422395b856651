"""A live session's lock: an exclusive `flock` on `sessions/<id>/writer.lock`.

A live session holds it from its first journal line until it closes cleanly, when the file is
removed. The OS drops the lock when the process dies, however it dies, so a lock file that can
be locked belongs to a dead session (see `recovery`). Without `fcntl` (Windows) sessions hold
no lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.files import make_private_dirs, open_store_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "writer.lock"


class SessionLock:
    """An exclusive lock on a session folder's lock file (held open until released)."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def hold(cls, session_dir: Path, modes: StoreModes = PRIVATE) -> SessionLock | None:
        """Create and lock the lock file of a session that is starting (None without fcntl).
        Raises OSError when the store cannot be written."""
        if fcntl is None:
            return None
        make_private_dirs(session_dir, modes)
        path = session_dir / LOCK_NAME
        while True:
            handle = os.fdopen(open_store_file(path, os.O_RDWR, modes), "r+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # A recoverer may have removed the file between our open and our lock: lock the
            # file that is there now, or nobody could tell this session is alive.
            if _same_file(handle, path):
                return cls(path, handle)
            handle.close()

    @classmethod
    def take_if_dead(cls, session_dir: Path) -> SessionLock | None:
        """The lock of a session whose kernel is gone; None while it lives (or was closed)."""
        if fcntl is None:
            return None
        path = session_dir / LOCK_NAME
        try:
            handle = os.fdopen(os.open(path, os.O_RDWR), "r+b")
        except OSError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        if not _same_file(handle, path):
            handle.close()
            return None
        return cls(path, handle)

    def release(self, remove: bool) -> None:
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._handle.close()


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False
