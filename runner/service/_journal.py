"""The worker's journal: every accepted task, durably, until its retention ends.

:class:`Journal` is the interface the worker uses; :func:`open_journal`
opens the single-machine SQLite journal (:mod:`runner.service._journal_sqlite`).
A backend (a PostgreSQL journal shared by several workers is the next one)
must guarantee:

* **Durable before acknowledged.**  :meth:`~Journal.accept` returns only
  after the tasks are committed, so a 202 sent after it survives a crash of
  the process or the machine.  One row per task id: the first accept of an
  id wins; a later one with the same task gets the stored row back (a
  duplicate), one with a different task is an :class:`IdConflict` and
  nothing of its batch is stored.
* **Batched.**  Concurrent calls may share one transaction and one commit;
  each caller is answered after that commit.
* **One owner per connection.**  The journal's own task is the only user of
  its database connection; callers queue operations and wait for answers.
* **In order.**  :meth:`~Journal.record_status` does not wait (the Runner's
  observer hook is synchronous); the move is written with the next batch,
  before any operation queued after it.  A status never overwrites a result.
* **One result per task.**  :meth:`~Journal.finish` writes the terminal
  status and result once; a second call for the id changes nothing.
* **Claimed by one worker at a time.**  :meth:`~Journal.claim` hands out
  unfinished tasks that no live owner holds, each to one owner, for
  ``lease`` seconds; :meth:`~Journal.renew` extends the owner's leases, and
  a task whose lease lapsed (its worker died) may be claimed by another.
  A task may therefore run more than once, but it gets one result.  The
  SQLite journal is held by one process (an exclusive lock), so its claims
  are trivial: a task is held from its accept or claim until its finish or
  the journal's close, and leases never lapse.
* **Unfinished means resumable.**  A task without a result has not reached
  a terminal state; :meth:`~Journal.unfinished` lists them in submission
  order.  :meth:`~Journal.purge` deletes results past their retention.
* **Listed newest first.**  :meth:`~Journal.list` pages through the
  journaled tasks newest first by accept time, then by id (descending) among
  tasks accepted at the same instant, optionally only one ``status``, only
  those accepted at or after ``since``, only those tagged ``tag``.  Pages are
  keyset pages: each ends with a cursor naming the last row shown, and the
  next page starts strictly after it, so a walk sees every task that
  existed throughout exactly once, whatever is accepted or purged meanwhile.
  The cursor is opaque to clients (:func:`encode_cursor`: base64url of the
  JSON ``[accepted_at, id]``); one that does not decode is a
  :class:`BadCursor`.  Listing must cost the page, not the journal: a
  backend keeps an index on ``(accepted_at, id)``.
* **Failures are one error.**  A write the database refuses (disk full, an
  I/O error) raises :class:`JournalError`, and nothing of it stuck.
* **Any loop.**  Every method works on asyncio and trio.
"""

from __future__ import annotations

import base64
import binascii
import operator
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import msgspec
from msgspec import Struct

from runner._errors import StorageError
from runner._states import FINAL


class JournalError(StorageError):
    """An operation the journal's database refused (disk full, I/O error): nothing of it stuck."""


class IdConflict(Exception):
    """Ids already journaled for a different task; ``positions`` index the batch."""

    def __init__(self, positions: list[int]) -> None:
        self.positions = positions
        super().__init__(f"{len(positions)} ids are journaled for a different task")


class BadCursor(ValueError):
    """A ``cursor`` that no page of :meth:`Journal.list` handed out."""


class Listed(Struct, frozen=True, kw_only=True):
    """One task as :meth:`Journal.list` shows it: no task body, no result line."""

    id: str
    status: str
    #: Unix seconds the task was accepted (journaled) and its result written.
    accepted_at: float
    finished_at: float | None = None


class Page(Struct, frozen=True, kw_only=True):
    """One page of :meth:`Journal.list`; ``next_cursor`` is ``None`` on the last one."""

    tasks: list[Listed]
    next_cursor: str | None


def encode_cursor(accepted_at: float, task_id: str) -> str:
    """The opaque cursor after the row ``(accepted_at, task_id)``.

    JSON keeps the float exact (shortest round-trip repr), so the next page
    starts exactly after this row and not one tie earlier or later.
    """
    return base64.urlsafe_b64encode(msgspec.json.encode([accepted_at, task_id])).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(accepted_at, id)`` from :func:`encode_cursor`'s text; :class:`BadCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        accepted_at, task_id = msgspec.json.decode(raw, type=tuple[float, str])
    except (UnicodeEncodeError, binascii.Error, ValueError, msgspec.DecodeError):
        raise BadCursor(f"cursor {cursor[:80]!r} is not one this worker gave out") from None
    return accepted_at, task_id


class Stored(Struct, frozen=True, kw_only=True):
    """One journaled task as read back: its status and, once terminal, its result line."""

    id: str
    status: str
    result: bytes | None = None

    @property
    def finished(self) -> bool:
        """Whether the task has its one terminal result."""
        return self.result is not None


class Journal(Protocol):
    """The task journal (see the module docstring for what every backend promises)."""

    async def accept(
        self,
        tasks: Sequence[tuple[str, bytes]],
        *,
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
        """Insert each ``(id, task JSON)`` unless its id is journaled already; return after commit.

        Per task: ``None`` if it was inserted (status ``pending``, held by
        this journal's owner), else the row that already held its id.  A
        journaled id whose task is not ``same(journaled, given)`` is a
        conflict: nothing of the batch is inserted and :class:`IdConflict`
        names the positions.
        """
        ...

    async def claim(
        self, owner: str, *, limit: int | None = None, lease: float
    ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` unfinished tasks nobody holds, oldest first, now held by ``owner``."""
        ...

    async def renew(self, owner: str, *, lease: float) -> None:
        """Extend every lease ``owner`` holds to ``lease`` seconds from now."""
        ...

    def record_status(self, task_id: str, status: str) -> None:
        """Record a non-terminal status move; written with the next batch."""
        ...

    async def finish(self, task_id: str, status: str, result: bytes) -> None:
        """Store the task's one terminal result; a second call for the id changes nothing."""
        ...

    async def get(self, task_id: str) -> Stored | None:
        """The journaled task with this id, or ``None``."""
        ...

    async def unfinished(self) -> list[tuple[str, bytes]]:
        """Every task without a result, as ``(id, task JSON)``, in submission order."""
        ...

    async def purge(self, retention: float) -> int:
        """Delete results finished more than ``retention`` seconds ago; return how many."""
        ...

    # Last in the class: a method named ``list`` would shadow the builtin in
    # the annotations of any method after it.
    async def list(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        since: float | None = None,
        tag: str | None = None,
    ) -> Page:
        """Up to ``limit`` tasks after ``cursor``, newest first (accept time, then id).

        ``since`` keeps tasks accepted at or after that Unix time; ``tag``
        those whose task JSON has ``tag`` in its ``tags`` array.  Raises
        :class:`BadCursor` for a cursor it did not hand out.
        """
        ...


def check_status(status: str, *, terminal: bool) -> None:
    """Refuse a terminal status for a move, or a non-terminal one for a result."""
    if terminal and status not in FINAL:
        raise ValueError(f"{status!r} is not terminal")
    if not terminal and status in FINAL:
        raise ValueError(f"{status!r} is terminal: use finish()")


@asynccontextmanager
async def open_journal(
    path: str, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Journal]:
    """Open the SQLite journal at ``path``, start its owner task; on exit write what is queued.

    Raises :class:`~runner._errors.StorageError` with a clear message if the
    file is held by another worker, is not a journal, or cannot be created.
    """
    # Imported here: the implementation imports this module's Stored and checks.
    from runner.service._journal_sqlite import open_sqlite_journal

    async with open_sqlite_journal(path, clock=clock) as journal:
        yield journal
