"""The worker's journal: every accepted task, durably, until its retention ends.

One SQLite table, ``tasks``, one row per task id::

    id TEXT PRIMARY KEY     the task id (a repeated id finds its first row; a repeat
                            with another task is an IdConflict)
    task TEXT               the task line as accepted (JSON)
    status TEXT             pending | running | retrying | completed | failed | cancelled
    result TEXT             the result line (JSON) once terminal, else NULL
    submitted_at REAL       Unix seconds
    updated_at REAL         Unix seconds of the last status move
    finished_at REAL        Unix seconds the result was written, else NULL

Promises:

* **Durable before acknowledged.**  :meth:`Journal.accept` returns only after
  the rows are committed (WAL, ``synchronous=FULL``), so a 202 sent after it
  survives a crash of the process or the machine.
* **One owner.**  Only the journal's own task touches the connection, and the
  database is opened with an exclusive lock, so a second worker on the same
  file is refused at start instead of running every task twice.
* **Batched.**  Callers queue operations; the owner takes everything waiting,
  runs it in one transaction in a worker thread, commits once and then
  answers each caller.  Concurrent requests share one fsync.
* **Only its own file.**  A path naming any other SQLite database (one with
  tables that are not a journal's) is refused before anything is written to
  it; an empty or new file becomes a journal.
* **Unfinished means resumable.**  A row without a result is a task that has
  not reached a terminal state; :meth:`Journal.unfinished` lists them in
  submission order for the next start.

Status moves are recorded with :meth:`Journal.record_status`, a synchronous,
fire-and-forget call (the Runner's observer hook is synchronous); it is
written with the next batch, in order with everything else.
"""

from __future__ import annotations

import operator
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.to_thread
from msgspec import Struct

from runner._errors import StorageError, UsageError
from runner._states import FINAL

T = TypeVar("T")

#: Bumped when the table changes; stored in ``PRAGMA user_version``.
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        submitted_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    )""",
    # Serves the resume list (finished_at IS NULL) and the retention purge.
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at)",
)
#: The columns of ``tasks`` at :data:`SCHEMA_VERSION`: how a journal is told
#: from another database that happens to have a ``tasks`` table.
_COLUMNS: Final = ("id", "task", "status", "result", "submitted_at", "updated_at", "finished_at")


class JournalError(StorageError):
    """An operation the journal's database refused (disk full, I/O error): nothing of it stuck."""


class Stored(Struct, frozen=True, kw_only=True):
    """One journaled task as read back: its status and, once terminal, its result line."""

    id: str
    status: str
    result: bytes | None = None

    @property
    def finished(self) -> bool:
        """Whether the task has its one terminal result."""
        return self.result is not None


class IdConflict(Exception):
    """Ids already journaled for a different task; ``positions`` index the batch."""

    def __init__(self, positions: list[int]) -> None:
        self.positions = positions
        super().__init__(f"{len(positions)} ids are journaled for a different task")


class _Op(Generic[T]):
    """One queued operation; ``done`` is ``None`` for fire-and-forget writes."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], done: anyio.Event | None) -> None:
        self.fn = fn
        self.done = done
        self.value: T | None = None
        self.error: BaseException | None = None


class Journal:
    """The task journal; open it with :func:`open_journal`."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self._ops: deque[_Op[Any]] = deque()
        self._wake = anyio.Event()
        self._closed = False

    # -- the operations ---------------------------------------------------

    async def accept(
        self,
        tasks: Sequence[tuple[str, bytes]],
        *,
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
        """Insert each ``(id, task JSON)`` unless its id is journaled already.

        Returns, per task, ``None`` if it was inserted (a new task, status
        ``pending``) or the row that already held its id (a duplicate).
        Returns only once the inserts are committed.  A journaled id whose
        task is not ``same(journaled, given)`` is a conflict: nothing of the
        batch is inserted and :class:`IdConflict` names the positions.
        """
        now = self._clock()

        def run(conn: sqlite3.Connection) -> tuple[list[Stored | None], list[int]]:
            out: list[Stored | None] = []
            clashes: list[int] = []
            # The check and the inserts are one step for every other request (one
            # owner, one transaction), so two submissions of an id cannot both win.
            conn.execute("SAVEPOINT accept")
            for position, (task_id, body) in enumerate(tasks):
                cur = conn.execute(
                    "INSERT OR IGNORE INTO tasks (id, task, status, submitted_at, updated_at)"
                    " VALUES (?, ?, 'pending', ?, ?)",
                    (task_id, body.decode(), now, now),
                )
                if cur.rowcount == 1:
                    out.append(None)
                    continue
                row = conn.execute("SELECT task FROM tasks WHERE id = ?", (task_id,)).fetchone()
                if same(row[0].encode(), body):
                    out.append(_get(conn, task_id))
                else:
                    clashes.append(position)
            if clashes:
                conn.execute("ROLLBACK TO accept")
            conn.execute("RELEASE accept")
            return out, clashes

        stored, clashes = await self._call(run)
        if clashes:
            raise IdConflict(clashes)
        return stored

    def record_status(self, task_id: str, status: str) -> None:
        """Record a non-terminal status move; written with the next batch."""
        if status in FINAL:
            raise ValueError(f"{status!r} is terminal: use finish()")
        now = self._clock()

        def run(conn: sqlite3.Connection) -> None:
            # A row that already has its result keeps its terminal status.
            conn.execute(
                "UPDATE tasks SET status = ?, updated_at = ? WHERE id = ? AND result IS NULL",
                (status, now, task_id),
            )

        self._push(_Op(run, None))

    async def finish(self, task_id: str, status: str, result: bytes) -> None:
        """Store the task's one terminal result; a second call for the id changes nothing."""
        if status not in FINAL:
            raise ValueError(f"{status!r} is not terminal")
        now = self._clock()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET status = ?, result = ?, updated_at = ?, finished_at = ?"
                " WHERE id = ? AND result IS NULL",
                (status, result.decode(), now, now, task_id),
            )

        await self._call(run)

    async def get(self, task_id: str) -> Stored | None:
        """The journaled task with this id, or ``None``."""
        return await self._call(lambda conn: _get(conn, task_id))

    async def unfinished(self) -> list[tuple[str, bytes]]:
        """Every task without a result, as ``(id, task JSON)``, in submission order."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT id, task FROM tasks WHERE finished_at IS NULL ORDER BY rowid"
            ).fetchall()
            return [(row[0], row[1].encode()) for row in rows]

        return await self._call(run)

    async def purge(self, retention: float) -> int:
        """Delete results finished more than ``retention`` seconds ago; return how many."""
        cutoff = self._clock() - retention

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM tasks WHERE finished_at < ?", (cutoff,))
            return cur.rowcount

        return await self._call(run)

    # -- the owner --------------------------------------------------------

    def _push(self, op: _Op[Any]) -> None:
        if self._closed:
            raise UsageError("the journal is closed")
        self._ops.append(op)
        self._wake.set()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        op: _Op[T] = _Op(fn, anyio.Event())
        self._push(op)
        assert op.done is not None
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.value  # type: ignore[return-value]  # set by the owner when error is None

    async def _serve(self) -> None:
        """Run queued operations in batches until closed and drained."""
        while True:
            if not self._ops:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch = list(self._ops)
            self._ops.clear()
            await anyio.to_thread.run_sync(self._apply, batch)
            for op in batch:
                if op.done is not None:
                    op.done.set()

    def _apply(self, batch: list[_Op[Any]]) -> None:
        """Run one batch in one transaction (in a worker thread)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                op.value = op.fn(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = JournalError(f"the journal could not be written: {exc}")
            error.__cause__ = exc
            for op in batch:
                op.error = error

    def _close(self) -> None:
        self._closed = True
        self._wake.set()


def _get(conn: sqlite3.Connection, task_id: str) -> Stored | None:
    row = conn.execute("SELECT status, result FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        return None
    return Stored(id=task_id, status=row[0], result=None if row[1] is None else row[1].encode())


def _connect(path: str) -> sqlite3.Connection:
    """Open (creating) the journal and take its exclusive lock, or say why not."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        # The owner runs each batch in a worker thread, one batch at a time.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.5)
        # Before anything writes (even the WAL switch changes the file header):
        # a database that is not ours must be left exactly as it was.
        _check_is_journal(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Held until the connection closes: a second worker cannot share the file.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.execute("ROLLBACK")
            raise StorageError(
                f"journal {path} was written by a newer runner (schema {version});"
                " upgrade runner or point worker.journal at another file"
            )
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StorageError(
                f"journal {path} is in use by another worker; stop it or set worker.journal"
                " to another file"
            ) from None
        raise StorageError(f"cannot open journal {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"journal {path} is not a runner journal: {exc}") from exc
    return conn


def _check_is_journal(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a database that is neither empty nor a runner journal (reads only)."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
        )
    ]
    if not tables:
        return  # a new or empty file: it becomes a journal
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(tasks)"))
    # Every journal sets user_version in the transaction that creates its table.
    if tables == ["tasks"] and version >= 1 and columns == _COLUMNS:
        return
    if "tasks" in tables and version > SCHEMA_VERSION:
        return  # a newer runner's journal: refused next, with that reason
    conn.close()
    raise UsageError(
        f"journal {path} is not a runner journal: it is a SQLite database with other tables"
        f" ({', '.join(tables)}); point worker.journal at a new file"
    )


@asynccontextmanager
async def open_journal(
    path: str, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[Journal]:
    """Open the journal, start its owner task, and on exit write what is queued and close.

    Raises :class:`StorageError` with a clear message if the file is held by
    another worker, is not a journal, or cannot be created.
    """
    conn = await anyio.to_thread.run_sync(_connect, path)
    journal = Journal(conn, clock)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal._serve)
            try:
                yield journal
            finally:
                journal._close()
    finally:
        conn.close()
