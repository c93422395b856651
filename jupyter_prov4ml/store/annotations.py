"""What people say about runs after the fact: tags, notes and deletions.

`<store>/annotations.jsonl` is append-only, one JSON line per act, like a session's journal.
It is store-level truth beside the journals: the index is derived from both, so tags, notes
and deletions survive a deleted or rebuilt index. The file is read as untrusted input (a
store may be copied from elsewhere): bounded in size and line length, ids and tags checked
against their grammars, notes capped; a line that is not ours is skipped and counted.

Lines:
  {"event": "tag",    "run_id": ID, "tags": [TAG, ...], "at_unix_s": T}
  {"event": "untag",  "run_id": ID, "tags": [TAG, ...], "at_unix_s": T}
  {"event": "note",   "run_id": ID, "text": TEXT,        "at_unix_s": T}
  {"event": "delete", "run_id": ID, "session_id": ID,   "at_unix_s": T}

A `delete` line is a tombstone, written (and flushed to disk) before any file of the run is
removed: from then on readers treat the run as gone, whatever state its files are in, and a
delete that was interrupted is finished by the next `rm` or `gc`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_prov4ml.identity import valid_id
from jupyter_prov4ml.notation import utf8_safe
from jupyter_prov4ml.redaction import redact_text
from jupyter_prov4ml.settings import PRIVATE, StoreModes
from jupyter_prov4ml.store.files import make_private_dirs, open_store_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ANNOTATIONS_NAME = "annotations.jsonl"
# Far more than years of tagging; a larger file is not read at all (one warning).
MAX_FILE_BYTES = 64 * 2**20
MAX_LINE_BYTES = 64 * 2**10
MAX_NOTE_CHARS = 4_000
MAX_TAGS_PER_LINE = 64
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")


class AnnotationError(ValueError):
    """A tag or note that cannot be recorded; the message says why."""


def valid_tag(text: object) -> bool:
    """Whether `text` is a tag: letters, digits and `_.:+-`, ≤ 64 characters."""
    return isinstance(text, str) and _TAG.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Note:
    """A note on a run, with when it was written."""

    text: str
    at_unix_s: float


@dataclass(slots=True)
class Annotations:
    """What the annotations file says, replayed in order."""

    tags: dict[str, set[str]] = field(default_factory=dict)  # run id → tags
    notes: dict[str, list[Note]] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)  # run id → session id
    bad_lines: int = 0
    too_large: bool = False

    def tags_of(self, run_id: str) -> tuple[str, ...]:
        return tuple(sorted(self.tags.get(run_id, ())))

    def tag_pairs(self, only: str | None) -> Iterator[tuple[str, str]]:
        """(run id, `only`) of every live run tagged `only` (nothing for None)."""
        if only is None:
            return
        for run_id, tags in self.tags.items():
            if only in tags and run_id not in self.deleted:
                yield run_id, only


def annotations_path(store_root: Path) -> Path:
    return store_root / ANNOTATIONS_NAME


def read_annotations(store_root: Path) -> Annotations:
    """The annotations of a store (empty when it has none), read within bounds."""
    return AnnotationsReader(store_root).read()


class AnnotationsReader:
    """Reads a store's annotations file, and on later calls only the lines appended since
    (the file is append-only): a long-lived store object pays for each line once."""

    def __init__(self, store_root: Path) -> None:
        self.path = annotations_path(store_root)
        self._state = Annotations()
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._lock = threading.Lock()  # a kernel's store is read from more than one thread

    def read(self) -> Annotations:
        """The annotations as the file holds them now. Treat the result as read-only: a
        later call may extend it."""
        with self._lock:
            return self._read()

    def _read(self) -> Annotations:
        try:
            with self.path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_size > MAX_FILE_BYTES:
                    self._restart(None)
                    self._state.too_large = True
                    return self._state
                identity = (info.st_ino, info.st_dev)
                if identity != self._identity or info.st_size < self._offset:
                    self._restart(identity)  # replaced or cut: read it again from the start
                if info.st_size == self._offset:
                    return self._state
                handle.seek(self._offset)
                data = handle.read(info.st_size - self._offset)
        except OSError:
            self._restart(None)
            return self._state
        complete = data.rfind(b"\n") + 1  # a line being appended is read next time
        self._offset += complete
        for raw in data[:complete].split(b"\n"):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                self._state.bad_lines += 1
                continue
            try:
                _apply(self._state, json.loads(raw.decode("utf-8")))
            except (ValueError, KeyError, TypeError, RecursionError, AttributeError):
                self._state.bad_lines += 1
        return self._state

    def _restart(self, identity: tuple[int, int] | None) -> None:
        self._state = Annotations()
        self._identity = identity
        self._offset = 0


def _apply(state: Annotations, entry: dict[str, object]) -> None:
    event, run_id = entry["event"], entry["run_id"]
    if not valid_id(run_id):
        raise ValueError("not a run id")
    assert isinstance(run_id, str)
    at = entry.get("at_unix_s", 0.0)
    if type(at) not in (int, float):
        raise TypeError("bad time")
    if event in ("tag", "untag"):
        tags = entry["tags"]
        if not isinstance(tags, list) or len(tags) > MAX_TAGS_PER_LINE:
            raise TypeError("bad tags")
        if not all(valid_tag(tag) for tag in tags):
            raise ValueError("bad tag")
        held = state.tags.setdefault(run_id, set())
        if event == "tag":
            held.update(tags)  # type: ignore[arg-type]
        else:
            held.difference_update(tags)  # type: ignore[arg-type]
    elif event == "note":
        text = entry["text"]
        if not isinstance(text, str) or len(text) > MAX_NOTE_CHARS:
            raise ValueError("bad note")
        state.notes.setdefault(run_id, []).append(Note(text, float(at)))  # type: ignore[arg-type]
    elif event == "delete":
        session_id = entry["session_id"]
        if not valid_id(session_id):
            raise ValueError("not a session id")
        state.deleted[run_id] = str(session_id)
    else:
        raise ValueError(f"unknown event {event!r:.40}")


def tag_line(run_id: str, tags: Iterable[str], remove: bool = False) -> dict[str, object]:
    """The line that tags (or untags) a run; AnnotationError for a tag outside the grammar."""
    wanted = sorted(set(tags))
    bad = [tag for tag in wanted if not valid_tag(tag)]
    if bad:
        raise AnnotationError(
            f"{bad[0]!r:.70} is not a tag (letters, digits and _.:+- only, at most 64)"
        )
    if not wanted or len(wanted) > MAX_TAGS_PER_LINE:
        raise AnnotationError(f"give 1 to {MAX_TAGS_PER_LINE} tags")
    return {"event": "untag" if remove else "tag", "run_id": run_id, "tags": wanted}


def note_line(run_id: str, text: str) -> dict[str, object]:
    """The line that adds a note to a run; AnnotationError for an empty or too long note."""
    if not text.strip():
        raise AnnotationError("a note needs some text")
    if len(text) > MAX_NOTE_CHARS:
        raise AnnotationError(f"a note is at most {MAX_NOTE_CHARS:,} characters")
    # Written like everything else the store holds: a pasted token never reaches the disk.
    return {"event": "note", "run_id": run_id, "text": redact_text(utf8_safe(text))}


def delete_line(run_id: str, session_id: str) -> dict[str, object]:
    return {"event": "delete", "run_id": run_id, "session_id": session_id}


def append_annotations(
    store_root: Path, entries: Iterable[dict[str, object]], modes: StoreModes = PRIVATE
) -> None:
    """Append lines, whole and flushed to disk before this returns (a tombstone must be
    durable before any file it covers is removed). Raises OSError."""
    now = time.time()
    lines = []
    for entry in entries:
        line = json.dumps({**entry, "at_unix_s": now}, ensure_ascii=True) + "\n"
        if len(line) > MAX_LINE_BYTES:
            raise AnnotationError("an annotation is too long to record")
        lines.append(line)
    if not lines:
        return
    make_private_dirs(store_root, modes)
    path = annotations_path(store_root)
    fd = open_store_file(path, os.O_RDWR | os.O_APPEND, modes)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # two writers never interleave their lines
        size = os.fstat(fd).st_size
        if size + sum(map(len, lines)) > MAX_FILE_BYTES:
            raise AnnotationError(f"{path} is full ({MAX_FILE_BYTES // 2**20} MiB)")
        if size and os.pread(fd, 1, size - 1) != b"\n":
            lines.insert(0, "\n")  # a writer killed mid-line: do not glue ours to it
        data = "".join(lines).encode("ascii")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)
