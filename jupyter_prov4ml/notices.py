"""Our own problems, told to the user once, in one short line, from the main thread.

Background threads must never print (their output lands in whichever cell runs now), so they
queue a notice here and the next cell hook writes it to stderr.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import TextIO


def brief(error: BaseException) -> str:
    """An error in a few words on one line (a JSON error's repr can hold a whole document)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:160]


class Notices:
    """A thread-safe queue of one-line warnings, each key reported once until `reset(key)`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._pending: deque[str] = deque()
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._stream = stream

    def warn(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
            self._pending.append(message)

    def reset(self, key: str) -> None:
        """Allow `key` to be reported again (the problem went away)."""
        with self._lock:
            self._said.discard(key)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def drain(self) -> list[str]:
        messages = []
        while self._pending:
            messages.append(self._pending.popleft())
        return messages

    def flush_to_stderr(self) -> None:
        """Print pending notices (main thread only)."""
        stream = self._stream or sys.stderr
        for message in self.drain():
            print(f"jupyter_prov4ml: {message}", file=stream)
