"""The task journal's interface: every accepted task, durably, until its retention ends.

Two backends implement it:

* the single-machine journal, one SQLite file held by one worker process
  (:mod:`runner.service._journal_sqlite`, opened by
  :func:`runner.service._journal.open_journal`);
* the cluster's queue, one PostgreSQL table shared by every worker
  (:class:`runner.cluster._queue.Queue`).

This module sits below both (the cluster layer may not import the service
layer), so they share its types and errors, and the tests in
``tests/test_journal_contract.py`` run the same checks against each.

What **every** backend guarantees (:class:`Journal`):

* **Durable before acknowledged.**  :meth:`~Journal.accept` returns only
  after the tasks are committed, so a 202 sent after it survives a crash of
  the process or the machine.  One row per task id: the first accept of an
  id wins; a later one with the same task gets the stored row back (a
  duplicate), one with a different task is an :class:`IdConflict` and
  nothing of its batch is stored.
* **Read back as stored.**  :meth:`~Journal.get` answers the task's latest
  status and, once it has one, its one terminal result.
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
  backend keeps indexes on ``(accepted_at, id)`` and on the status filter.
* **Retention.**  :meth:`~Journal.purge` deletes results finished more than
  ``retention`` seconds ago and nothing else.
* **One result per task.**  Whatever writes a terminal result writes it
  once; a second write for the id changes nothing, and a status move never
  overwrites a result.

Where the backends genuinely differ, each has its own methods rather than a
shared signature that one of them would have to fake:

* **Holding a task.**  The SQLite journal is held by one process (an
  exclusive lock on the file), so every unfinished task is that process's:
  it resumes them all on start (:meth:`LocalJournal.unfinished`) and needs
  no claims or leases.  The cluster's queue is shared: a worker *claims*
  ready tasks (``Queue.claim``, ``FOR UPDATE SKIP LOCKED``) for a *lease*
  it renews while they run (``Queue.renew``); a task whose lease lapsed (its
  worker died) is made ready again by any worker's sweep (``Queue.reclaim``)
  and may run twice.  A cluster worker resumes nothing of its own.
* **The terminal write.**  :meth:`LocalJournal.finish` writes the result
  for an id.  The cluster's ``Queue.finish`` is conditional on the writer
  still holding the lease it got with the claim (same owner, same claim
  number), batched, and says which results were written: a worker that lost
  its lease writes nothing.
* **Status moves.**  :meth:`LocalJournal.record_status` queues the move for
  the journal's next batch, so it is in before anything queued after it.
  The cluster sends moves with the lease renewals (``Queue.renew``), so
  another worker may show a running task's status up to ``lease / 3`` late.
* **The bound on unfinished tasks.**  One worker counts its own in memory;
  the cluster's ``Queue.accept(..., room=N)`` counts the whole cluster's in
  the transaction that inserts, and raises
  :class:`~runner._errors.QueueFull` with nothing inserted.
* **Cancellation.**  A single worker cancels its own task and journals the
  result (:meth:`LocalJournal.finish`); the cluster marks the row
  (``Queue.cancel``) and the holder, wherever it runs, stops the task.
* **Clocks and loops.**  The SQLite journal stamps times with the clock it
  was given and works on asyncio and trio; the cluster stamps the database
  server's time (so workers' clocks need not agree) and is asyncio-only
  (asyncpg).
* **Failures.**  A write the SQLite database refuses (disk full, an I/O
  error) raises :class:`JournalError` and nothing of it stuck.  The cluster
  retries an operation whose connection was lost (a database restart) until
  it succeeds; the worker answers a request that waits too long with a 503.
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable, Sequence
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
    """What every journal backend offers (see the module docstring for the promises)."""

    async def accept(
        self,
        tasks: Sequence[tuple[str, bytes]],
        *,
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
        """Insert each ``(id, task JSON)`` unless its id is journaled already; return after commit.

        Per task: ``None`` if it was inserted (status ``pending``), else the
        row that already held its id.  A journaled id whose task is not
        ``same(journaled, given)`` is a conflict: nothing of the batch is
        inserted and :class:`IdConflict` names the positions.
        """
        ...

    async def get(self, task_id: str) -> Stored | None:
        """The journaled task with this id, or ``None``."""
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


class LocalJournal(Journal, Protocol):
    """A journal one worker process holds alone (SQLite): every unfinished task is its own.

    Batched: concurrent calls may share one transaction and one commit, each
    caller answered after it; the journal's own task is the only user of its
    connection.
    """

    def record_status(self, task_id: str, status: str) -> None:
        """Record a non-terminal status move; written with the next batch, before later calls."""
        ...

    async def finish(self, task_id: str, status: str, result: bytes) -> None:
        """Store the task's one terminal result; a second call for the id changes nothing."""
        ...

    async def unfinished(self) -> list[tuple[str, bytes]]:
        """Every task without a result, as ``(id, task JSON)``, in submission order (to resume)."""
        ...


def check_status(status: str, *, terminal: bool) -> None:
    """Refuse a terminal status for a move, or a non-terminal one for a result."""
    if terminal and status not in FINAL:
        raise ValueError(f"{status!r} is not terminal")
    if not terminal and status in FINAL:
        raise ValueError(f"{status!r} is terminal: use finish()")
