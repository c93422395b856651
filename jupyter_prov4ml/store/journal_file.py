"""One session's journal file, appended to in whole lines.

`append` hands every byte of its lines to the OS before it returns, with unbuffered writes;
a write that fails part-way (a full disk) is cut back to where it started, so the file never
holds half a line of ours and a failed append can simply be tried again. This is the writer's
durability rule: what `append` returned for is in the file, whatever happens to the kernel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from jupyter_prov4ml.settings import StoreModes
from jupyter_prov4ml.store.files import make_private_dirs, open_store_file


class JournalFile:
    """An open journal (`path`), appended to with whole lines only."""

    def __init__(self, path: Path, modes: StoreModes) -> None:
        """Opens (creating folders and file with the store's modes) and ends a line a dead
        writer left half-written, so the next line is not glued to it. Raises OSError."""
        make_private_dirs(path.parent, modes)
        self.path = path
        self._fd = open_store_file(path, os.O_RDWR | os.O_APPEND, modes)
        try:
            opened = os.fstat(self._fd)
            self.size = opened.st_size
            self._identity = (opened.st_ino, opened.st_dev)
            if self.size and os.pread(self._fd, 1, self.size - 1) != b"\n":
                self.append(["\n"])
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def removed(self) -> bool:
        """True when `path` no longer names our file (the store was removed under us)."""
        try:
            found = os.stat(self.path)  # one call: our own file's identity is kept
            return (found.st_ino, found.st_dev) != self._identity
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell now; the next write will say if the store is gone

    def append(self, lines: Sequence[str]) -> None:
        """Write `lines` (each ending in a newline) in one go; on OSError nothing was added."""
        data = "".join(lines).encode("utf-8")
        start = self.size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self.size = start + len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
