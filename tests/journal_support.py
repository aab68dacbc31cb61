"""One harness over both journal backends, for the contract tests (tests/test_journal_contract.py).

The contract (:mod:`runner._journal`) is about what is stored and listed at
which time.  The SQLite journal takes its clock as a parameter; the cluster
queue stamps the database server's ``now()``, which a test cannot set, so the
harness moves the PostgreSQL rows' times to the instant the test names right
after each write (one ``UPDATE`` of the rows that write created).  Times in
the tests are offsets from :attr:`Harness.now`, the real time on PostgreSQL
(its purge compares with the server's clock) and a fixed instant on SQLite.

Where a backend writes differently (a terminal result, a status move), the
harness uses that backend's own way: the SQLite journal's ``finish`` and
``record_status``; the queue's claim, conditional ``finish`` and ``renew``.
"""

from __future__ import annotations

import operator
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from runner._journal import Journal, Stored

#: The backends and the loops each runs on: the cluster's driver is asyncio-only.
BACKENDS = {
    "sqlite-asyncio": ("sqlite", "asyncio"),
    "sqlite-trio": ("sqlite", "trio"),
    "postgresql-asyncio": ("postgresql", "asyncio"),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant(t: float) -> datetime:
    """Unix seconds ``t`` as a timestamptz value, to the microsecond."""
    return _EPOCH + timedelta(microseconds=round(t * 1_000_000))


class Harness(Protocol):
    """A journal of one backend, with the backend's own ways to finish and move tasks."""

    name: str
    now: float

    @property
    def journal(self) -> Journal: ...

    async def accept_at(
        self,
        t: float,
        tasks: Sequence[tuple[str, bytes]],
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]: ...

    async def finish_at(self, t: float, task_id: str, status: str, result: bytes) -> None: ...

    async def move(self, task_id: str, status: str) -> None: ...

    async def unfinished(self) -> list[tuple[str, bytes]]: ...

    async def purge_at(self, t: float, retention: float) -> int: ...

    async def reopen(self) -> None: ...


class SqliteHarness:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.now = 1_000_000.0
        self._clock = [self.now]
        self._stack = AsyncExitStack()
        self._journal: Journal | None = None

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    async def open(self) -> None:
        from runner.service._journal import open_journal

        self._journal = self._local = await self._stack.enter_async_context(
            open_journal(self.path, clock=lambda: self._clock[0])
        )

    async def close(self) -> None:
        await self._stack.aclose()

    async def reopen(self) -> None:
        await self.close()
        self._stack = AsyncExitStack()
        await self.open()

    async def accept_at(
        self,
        t: float,
        tasks: Sequence[tuple[str, bytes]],
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
        self._clock[0] = t
        return await self._local.accept(tasks, same=same)

    async def finish_at(self, t: float, task_id: str, status: str, result: bytes) -> None:
        self._clock[0] = t
        await self._local.finish(task_id, status, result)

    async def move(self, task_id: str, status: str) -> None:
        self._local.record_status(task_id, status)

    async def unfinished(self) -> list[tuple[str, bytes]]:
        return await self._local.unfinished()

    async def purge_at(self, t: float, retention: float) -> int:
        self._clock[0] = t
        return await self._local.purge(retention)


class PostgresHarness:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.now = float(round(time.time()))
        self._stack = AsyncExitStack()
        #: Claim numbers of the tasks this harness's worker holds.
        self._claims: dict[str, int] = {}

    @property
    def journal(self) -> Journal:
        return self._queue

    async def open(self) -> None:
        from runner.cluster._pool import open_database
        from runner.cluster._queue import Queue
        from runner.cluster._schema import migrate
        from runner.service._cluster import cancelled_result

        self._db = await self._stack.enter_async_context(open_database(self.url))
        await migrate(self._db)
        self._queue = Queue(self._db, worker_id="contract", lease=300, cancelled=cancelled_result)

    async def close(self) -> None:
        await self._stack.aclose()

    async def reopen(self) -> None:
        await self.close()
        self._stack = AsyncExitStack()
        await self.open()

    async def accept_at(
        self,
        t: float,
        tasks: Sequence[tuple[str, bytes]],
        same: Callable[[bytes, bytes], bool] = operator.eq,
    ) -> list[Stored | None]:
        found = await self._queue.accept(tasks, same=same)
        added = [task_id for (task_id, _), row in zip(tasks, found, strict=True) if row is None]
        await self._db.execute(
            "UPDATE runner_tasks SET submitted_at = $1 WHERE id = ANY($2::text[])",
            instant(t),
            added,
        )
        return found

    async def _hold(self, task_id: str) -> int | None:
        """Claim what is ready (the queue hands out the oldest first) until this id is held."""
        while task_id not in self._claims:
            claims = await self._queue.claim(1000)
            if not claims:
                return None
            self._claims.update((c.id, c.claims) for c in claims)
        return self._claims[task_id]

    async def finish_at(self, t: float, task_id: str, status: str, result: bytes) -> None:
        from runner.cluster._queue import Finish

        claims = await self._hold(task_id)
        if claims is None:
            return  # finished already: nobody can claim it
        done = Finish(id=task_id, claims=claims, status=status, result=result)
        if await self._queue.finish([done]):
            await self._db.execute(
                "UPDATE runner_tasks SET finished_at = $1 WHERE id = $2", instant(t), task_id
            )

    async def move(self, task_id: str, status: str) -> None:
        if await self._hold(task_id) is not None:
            await self._queue.renew([task_id], {task_id: status})

    async def unfinished(self) -> list[tuple[str, bytes]]:
        rows = await self._db.fetch(
            "SELECT id, task FROM runner_tasks WHERE result IS NULL ORDER BY seq"
        )
        return [(r["id"], r["task"].encode()) for r in rows]

    async def purge_at(self, t: float, retention: float) -> int:
        # The server's clock is the purge's: the test's times were set around it.
        assert abs(t - time.time()) < 60, "PostgreSQL purges against the server's clock"
        return await self._queue.purge(retention)


@asynccontextmanager
async def open_harness(kind: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A fresh journal of ``kind`` ("sqlite" or "postgresql"), closed (and dropped) after."""
    if kind == "sqlite":
        sqlite = SqliteHarness(tmp_path / "j.db")
        await sqlite.open()
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    from tests.pg_support import create_database, drop_database

    url = await create_database()
    pg = PostgresHarness(url)
    try:
        await pg.open()
        try:
            yield pg
        finally:
            await pg.close()
    finally:
        await drop_database(url)
