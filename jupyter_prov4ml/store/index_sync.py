"""Keeps one session's rows in the index in step with its journal (the writer thread's part).

The journal is the truth; the index is derived. Each drain of the writer collects the rows of
what it journaled into a batch, and `sync` commits them in one transaction once the journal
is flushed, with the journal offset up to which every line is indexed. When that cannot be
known (a failed write, a journal begun again), readers catch up from the journal instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_prov4ml.settings import StoreModes

if TYPE_CHECKING:
    from pathlib import Path

    from jupyter_prov4ml.store.index import IndexBatch, IndexWriter


class IndexSync:
    """The index rows of one session's journal, committed after each drain."""

    def __init__(self, store_root: Path, session_id: str, modes: StoreModes) -> None:
        self._store_root = store_root
        self._session_id = session_id
        self._modes = modes
        # Made on first use, in the writer thread: `%load_ext` does not import sqlite3.
        self._index: IndexWriter | None = None
        self._batch: IndexBatch | None = None
        # The journal offset since which every line this writer wrote is in the index (None:
        # unknown, until the journal is next opened).
        self._clean_since: int | None = None
        self._synced_to = -1
        self._restart = False

    def batch(self) -> IndexBatch:
        """The rows this drain has journaled so far."""
        if self._batch is None:
            from jupyter_prov4ml.store.index import IndexBatch

            self._batch = IndexBatch()
        return self._batch

    def journal_opened(self, size: int) -> None:
        if self._clean_since is None:
            self._clean_since = size

    def journal_restarted(self) -> None:
        """Our journal was removed and begun again: forget what the index held of it."""
        self._restart = True
        self._clean_since = None
        self._synced_to = -1

    def write_failed(self) -> None:
        """Lines buffered for the journal may be lost: index nothing the journal lacks."""
        self._batch = None
        self._clean_since = None

    def sync(self, journal_end: int) -> None:
        """Index what this drain journaled (the journal is flushed up to `journal_end`): one
        transaction. A failure only costs readers a catch-up from the journal."""
        batch = self.batch()
        self._batch = None
        if not batch and journal_end == self._synced_to:
            return
        if self._index is None:
            from jupyter_prov4ml.store.index import IndexWriter

            self._index = IndexWriter(self._store_root, self._session_id, self._modes)
        if not self._index.commit(batch, self._clean_since, journal_end, self._restart):
            # Lines after this point go into later batches; readers index the ones before.
            self._clean_since = journal_end
            return
        self._restart = False
        self._synced_to = journal_end
        if not batch.complete:
            self._clean_since = journal_end

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
