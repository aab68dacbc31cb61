"""The worker's journal: the interface (:mod:`runner._journal`) and how to open one.

:func:`open_journal` opens the single-machine SQLite journal
(:mod:`runner.service._journal_sqlite`); the cluster's PostgreSQL queue
(:class:`runner.cluster._queue.Queue`) is the other backend of the same
interface.  The interface, its types and its errors live in
:mod:`runner._journal`, below both backends, and are re-exported here for
the service's modules.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from runner._journal import (
    BadCursor,
    IdConflict,
    Journal,
    JournalError,
    Listed,
    LocalJournal,
    Page,
    Stored,
    check_status,
    decode_cursor,
    encode_cursor,
)
from runner.service._journal_sqlite import open_sqlite_journal

__all__ = [
    "BadCursor",
    "IdConflict",
    "Journal",
    "JournalError",
    "Listed",
    "LocalJournal",
    "Page",
    "Stored",
    "check_status",
    "decode_cursor",
    "encode_cursor",
    "open_journal",
]


@asynccontextmanager
async def open_journal(
    path: str, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[LocalJournal]:
    """Open the SQLite journal at ``path``, start its owner task; on exit write what is queued.

    Raises :class:`~runner._errors.StorageError` with a clear message if the
    file is held by another worker, is not a journal, or cannot be created.
    """
    async with open_sqlite_journal(path, clock=clock) as journal:
        yield journal
