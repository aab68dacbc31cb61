"""The single-machine journal: one SQLite file, one owner task, one worker process.

One table, ``tasks``, one row per task id::

    id TEXT PRIMARY KEY     the task id (a repeated id finds its first row; a repeat
                            with another task is an IdConflict)
    task TEXT               the task line as accepted (JSON)
    status TEXT             pending | running | retrying | completed | failed | cancelled
    result TEXT             the result line (JSON) once terminal, else NULL
    submitted_at REAL       Unix seconds
    updated_at REAL         Unix seconds of the last status move
    finished_at REAL        Unix seconds the result was written, else NULL

How it keeps :class:`~runner._journal.LocalJournal`'s promises:

* A path naming any other SQLite database (one with tables that are not a
  journal's) is refused before anything is written to it; an empty or new
  file becomes a journal.
* Commits use WAL with ``synchronous=FULL``, so an answered accept is on disk.
* The database is opened with an exclusive lock, so a second worker on the
  same file is refused at start instead of running every task twice; that
  lock is also why it needs no claims or lease columns (every unfinished
  task is this process's; see :mod:`runner._journal`).
* Callers queue operations on an unbounded memory stream (``record_status``
  must not wait); the owner task takes everything waiting
  (:func:`~runner._owner.receive_batch`), runs it in one transaction in a
  worker thread (:class:`~runner._owner.OwnedConnection`) and then answers
  each caller, the same pattern as the metrics writer.
"""

from __future__ import annotations

import math
import operator
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner._errors import StorageError, UsageError
from runner._journal import (
    IdConflict,
    JournalError,
    Listed,
    Page,
    Stored,
    check_status,
    decode_cursor,
    encode_cursor,
)
from runner._owner import OwnedConnection, receive_batch

T = TypeVar("T")

#: Bumped when the table or its indexes change; stored in ``PRAGMA user_version``.
#: 2 added the listing indexes; a version-1 journal gets them (``CREATE INDEX
#: IF NOT EXISTS``) and the new version in the transaction that opens it.
SCHEMA_VERSION: Final = 2
#: Most operations run in one transaction.
MAX_BATCH: Final = 1_000

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
    # Serve Journal.list: newest first, keyset pages; the second one for
    # ``?status=``, so a rare status does not walk every other row.
    "CREATE INDEX IF NOT EXISTS tasks_listed ON tasks (submitted_at, id)",
    "CREATE INDEX IF NOT EXISTS tasks_listed_status ON tasks (status, submitted_at, id)",
)
#: The columns of ``tasks`` at :data:`SCHEMA_VERSION`: how a journal is told
#: from another database that happens to have a ``tasks`` table.
_COLUMNS: Final = ("id", "task", "status", "result", "submitted_at", "updated_at", "finished_at")


class _Op(Generic[T]):
    """One queued operation; ``done`` is ``None`` for fire-and-forget writes."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], done: anyio.Event | None) -> None:
        self.fn = fn
        self.done = done
        self.value: T | None = None
        self.error: BaseException | None = None


class SqliteJournal:
    """The SQLite :class:`~runner._journal.LocalJournal`; see :func:`open_sqlite_journal`."""

    def __init__(self, conn: OwnedConnection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self._send: MemoryObjectSendStream[_Op[Any]]
        self._receive: MemoryObjectReceiveStream[_Op[Any]]
        self._send, self._receive = anyio.create_memory_object_stream[_Op[Any]](math.inf)

    # -- the operations ---------------------------------------------------

    async def accept(
        self,
        tasks: Sequence[tuple[str, bytes]],
        *,
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
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
        check_status(status, terminal=False)
        now = self._clock()

        def run(conn: sqlite3.Connection) -> None:
            # A row that already has its result keeps its terminal status.
            conn.execute(
                "UPDATE tasks SET status = ?, updated_at = ? WHERE id = ? AND result IS NULL",
                (status, now, task_id),
            )

        self._push(_Op(run, None))

    async def finish(self, task_id: str, status: str, result: bytes) -> None:
        check_status(status, terminal=True)
        now = self._clock()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET status = ?, result = ?, updated_at = ?, finished_at = ?"
                " WHERE id = ? AND result IS NULL",
                (status, result.decode(), now, now, task_id),
            )

        await self._call(run)

    async def get(self, task_id: str) -> Stored | None:
        return await self._call(lambda conn: _get(conn, task_id))

    async def unfinished(self) -> list[tuple[str, bytes]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT id, task FROM tasks WHERE finished_at IS NULL ORDER BY rowid"
            ).fetchall()
            return [(row[0], row[1].encode()) for row in rows]

        return await self._call(run)

    async def purge(self, retention: float) -> int:
        cutoff = self._clock() - retention

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM tasks WHERE finished_at < ?", (cutoff,))
            return cur.rowcount

        return await self._call(run)

    # Last of the operations: ``list`` would shadow the builtin in later annotations.
    async def list(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        since: float | None = None,
        tag: str | None = None,
    ) -> Page:
        where: list[str] = []
        args: list[object] = []
        if cursor is not None:
            # Row values walk the (submitted_at, id) index from the cursor on.
            where.append("(submitted_at, id) < (?, ?)")
            args.extend(decode_cursor(cursor))
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if since is not None:
            where.append("submitted_at >= ?")
            args.append(since)
        if tag is not None:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(tasks.task, '$.tags') WHERE json_each.value = ?)"
            )
            args.append(tag)
        clause = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT id, status, submitted_at, finished_at FROM tasks{clause} ORDER BY submitted_at DESC, id DESC LIMIT ?"  # noqa: S608, E501 - fixed fragments, values bound
        # One row more than asked says whether another page follows.
        args.append(limit + 1)

        def run(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(sql, args).fetchall()
            tasks = [
                Listed(id=r[0], status=r[1], accepted_at=r[2], finished_at=r[3])
                for r in rows[:limit]
            ]
            more = len(rows) > limit and tasks
            last = tasks[-1] if more else None
            return Page(
                tasks=tasks,
                next_cursor=None if last is None else encode_cursor(last.accepted_at, last.id),
            )

        return await self._call(run)

    # -- the owner --------------------------------------------------------

    def _push(self, op: _Op[Any]) -> None:
        try:
            self._send.send_nowait(op)
        except anyio.ClosedResourceError:
            raise UsageError("the journal is closed") from None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        op: _Op[T] = _Op(fn, anyio.Event())
        self._push(op)
        assert op.done is not None
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.value  # type: ignore[return-value]  # set by the owner when error is None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run queued operations in batches until closed and drained (the owner task)."""
        task_status.started()
        with self._receive:
            while batch := await receive_batch(self._receive, MAX_BATCH):
                await self._conn.run(_apply, batch)
                for op in batch:
                    if op.done is not None:
                        op.done.set()

    def close(self) -> None:
        """Take no more operations; :meth:`serve` returns once the queued ones are written."""
        self._send.close()


def _apply(conn: sqlite3.Connection, batch: list[_Op[Any]]) -> None:
    """Run one batch in one transaction (in the owner's worker thread)."""
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
        # check_same_thread=False: the owner's calls land on whichever worker
        # thread anyio picks, one at a time (OwnedConnection's limiter).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.5)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open journal {path}: {exc}") from exc
    try:
        _prepare(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    """WAL, full sync, the exclusive lock and the schema, or one clear StorageError."""
    try:
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
    raise UsageError(
        f"journal {path} is not a runner journal: it is a SQLite database with other tables"
        f" ({', '.join(tables)}); point worker.journal at a new file"
    )


@asynccontextmanager
async def open_sqlite_journal(
    path: str, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[SqliteJournal]:
    """Open the journal, start its owner task, and on exit write what is queued and close."""
    conn = OwnedConnection(await anyio.to_thread.run_sync(_connect, path))
    journal = SqliteJournal(conn, clock)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(journal.serve)
            try:
                yield journal
            finally:
                journal.close()
    finally:
        await conn.aclose()
