"""The connections to the cluster's database: one pool, retried operations, notifications.

:class:`Database` is the one owner of the pool.  Every operation goes through
:meth:`Database.run`, which retries it with exponential backoff (stamina)
when the connection is lost: a server restart, a failover, or a backend
ended with ``pg_terminate_backend``.  Operations are written so that running
one twice is harmless (every write is conditional or idempotent), because a
connection can drop after the server committed but before the answer came.

Notifications (LISTEN/NOTIFY) arrive on one dedicated connection owned by
:meth:`Database.listen`; when it is lost it reconnects with backoff and tells
every subscriber to look again, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import asyncpg
import stamina
from anyio.abc import TaskStatus

from runner._errors import UsageError
from workers._secrets import scrub

T = TypeVar("T")

#: Errors after which an operation is tried again on a fresh connection.
TRANSIENT: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.TransactionRollbackError,
    # What asyncpg raises on a connection the server ended while it was idle.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
#: Seconds a start waits for the server before saying it is unreachable.
CONNECT_TIMEOUT: Final = 5.0
#: Longest pause between two reconnection tries, in seconds.
MAX_BACKOFF: Final = 2.0

_SCHEMES: Final = ("postgresql", "postgres")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]*$")

#: A pooled asyncpg connection (asyncpg ships no type information).
Connection: TypeAlias = Any


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def check_url(url: str) -> str | None:
    """What is wrong with a database URL, or ``None`` if it can be used."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        return (
            f"'{redact(url)}' is not a PostgreSQL URL; write"
            " postgresql://user:password@host:5432/database"
        )
    return None


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database rather than a file."""
    return urlsplit(text).scheme in _SCHEMES


def unreachable(url: str, exc: BaseException) -> UsageError:
    """The one message for a database that cannot be used at start."""
    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    return UsageError(
        f"cannot reach the cluster database {redact(url)}: {reason}; check cluster.database"
        " and that PostgreSQL is running and accepts this user"
    )


class Database:
    """A pool of connections to one database; open it with :func:`open_database`."""

    def __init__(self, pool: asyncpg.Pool, url: str, *, retry_timeout: float | None) -> None:
        self._pool = pool
        self.url = url
        #: Seconds :meth:`run` keeps retrying before giving up (``None``: for ever).
        self.retry_timeout = retry_timeout
        #: Operations that had to be tried again (for tests and /metrics).
        self.retries = 0
        #: True from a lost connection until the next operation that succeeds.
        self.failing = False

    @property
    def name(self) -> str:
        """The database URL without its password."""
        return redact(self.url)

    async def run(
        self,
        fn: Callable[[Connection], Awaitable[T]],
        *,
        retry_for: float | None = None,
    ) -> T:
        """``fn`` on a pooled connection, tried again while the connection keeps failing.

        ``retry_for`` bounds the retrying in seconds (default
        :attr:`retry_timeout`); past it the last error propagates.
        """
        limit = self.retry_timeout if retry_for is None else retry_for
        async for attempt in stamina.retry_context(
            on=TRANSIENT,
            attempts=None,
            timeout=limit,
            wait_initial=0.05,
            wait_max=MAX_BACKOFF,
        ):
            with attempt:
                if attempt.num > 1:
                    self.retries += 1
                    self.failing = True
                async with self._pool.acquire() as conn:
                    try:
                        value = await fn(conn)
                    except TRANSIENT:
                        # Never hand a broken connection back to the pool.
                        conn.terminate()
                        raise
                self.failing = False
                return value
        raise AssertionError("unreachable: stamina either returns or raises")

    async def execute(self, sql: str, *args: object) -> str:
        """One statement, retried like :meth:`run`."""
        return await self.run(lambda conn: conn.execute(sql, *args))

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """The rows of one query, retried like :meth:`run`."""
        return await self.run(lambda conn: conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first value of one query, retried like :meth:`run`."""
        return await self.run(lambda conn: conn.fetchval(sql, *args))

    async def listen(
        self,
        channels: dict[str, Callable[[str], None]],
        on_reconnect: Callable[[], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver notifications on ``channels`` to their callbacks until cancelled.

        Ready (``task_status.started()``) once the first LISTEN is in place.
        After a lost connection it reconnects with backoff and calls
        ``on_reconnect`` so subscribers look again for what they missed.
        """
        started = False
        delay = 0.05
        while True:
            lost = anyio.Event()
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
            except TRANSIENT:
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                for channel, callback in channels.items():
                    await conn.add_listener(channel, _deliver(callback))
                delay = 0.05
                if started:
                    on_reconnect()
                else:
                    started = True
                    task_status.started()
                # A terminated backend is noticed only when the socket is
                # read; a cheap query every few seconds makes sure it is.
                while not lost.is_set():
                    with anyio.move_on_after(2.0):
                        await lost.wait()
                    if not lost.is_set():
                        await conn.execute("SELECT 1")
            except TRANSIENT:
                pass
            finally:
                conn.terminate()

    async def aclose(self) -> None:
        """Close the pool, waiting a little for connections in use."""
        with anyio.move_on_after(5, shield=True):
            await self._pool.close()
        self._pool.terminate()


def _deliver(callback: Callable[[str], None]) -> Callable[..., None]:
    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return on_notify


class _DriverNotices(logging.Handler):
    """asyncpg's own warnings as one line each, never a traceback.

    The pool logs, with the exception's traceback, when it cannot refill
    itself (a database restarting says "the database system is shutting
    down"); the operations that need a connection are retried by
    :meth:`Database.run` anyway, so one line saying so is enough.

    The ``asyncpg`` logger is the process's, so one handler serves every open
    database (two handlers would print each warning twice).  A warning does
    not say which pool it came from: it goes to the newest open database's
    ``notice`` (dropped when none has one).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._notices: dict[object, Callable[[str], None] | None] = {}
        #: The open databases' passwords: a driver message never repeats one.
        self._passwords: dict[object, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        notice = next((n for n in reversed(self._notices.values()) if n is not None), None)
        if notice is None:
            return
        text = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            text = f"{text} ({type(exc).__name__}: {exc})"
        notice(f"database driver: {scrub(text, self._passwords.values())}")

    @contextmanager
    def open(self, notice: Callable[[str], None] | None, url: str) -> Iterator[None]:
        """Deliver driver warnings to ``notice`` while it is the newest one open."""
        logger = logging.getLogger("asyncpg")
        if not self._notices:
            logger.addHandler(self)
            logger.propagate = False
        token = object()
        self._notices[token] = notice
        password = urlsplit(url).password
        if password:
            self._passwords[token] = unquote(password)
        try:
            yield
        finally:
            del self._notices[token]
            self._passwords.pop(token, None)
            if not self._notices:
                logger.removeHandler(self)
                if not logger.handlers:
                    logger.propagate = True


_DRIVER_NOTICES: Final = _DriverNotices()


@asynccontextmanager
async def open_database(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    retry_timeout: float | None = None,
    setup: Callable[[Connection], Awaitable[None]] | None = None,
    notice: Callable[[str], None] | None = None,
) -> AsyncIterator[Database]:
    """Connect a pool to ``url`` and yield the :class:`Database`; close it on exit.

    A database that cannot be reached at start is a :class:`UsageError`
    (one message, no traceback), so a worker with a wrong URL stops at once.
    While it is open, the driver's own warnings go to ``notice`` as one
    line each (dropped without one), never as a traceback on stderr.
    """
    with _DRIVER_NOTICES.open(notice, url):
        async with _open_database(url, min_size, max_size, retry_timeout, setup) as db:
            yield db


@asynccontextmanager
async def _open_database(
    url: str,
    min_size: int,
    max_size: int,
    retry_timeout: float | None,
    setup: Callable[[Connection], Awaitable[None]] | None,
) -> AsyncIterator[Database]:
    problem = check_url(url)
    if problem is not None:
        raise UsageError(f"cluster.database: {problem}")
    try:
        with anyio.fail_after(CONNECT_TIMEOUT * 2):
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT,
                # Statements are few and fixed; caching them server-side saves a
                # parse per call.  Connections that reset lose it, which is fine.
                statement_cache_size=256,
                init=setup,
            )
    except (*TRANSIENT, asyncpg.PostgresError, ValueError) as exc:
        raise unreachable(url, exc) from None
    db = Database(pool, url, retry_timeout=retry_timeout)
    try:
        yield db
    finally:
        await db.aclose()


def quote_ident(name: str) -> str:
    """``name`` as a SQL identifier; only plain lower-case names are accepted."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


__all__ = [
    "TRANSIENT",
    "Connection",
    "Database",
    "check_url",
    "is_postgres_url",
    "open_database",
    "quote_ident",
    "redact",
    "unreachable",
]
