"""The cluster queue against a real PostgreSQL (asyncio only: asyncpg)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from runner._errors import QueueFull, UsageError
from runner._journal import Stored
from runner.cluster._pool import open_database, redact
from runner.cluster._queue import Finish, Queue
from runner.cluster._schema import SCHEMA_VERSION, check_readable, migrate
from tests.pg_support import no_backoff, pg_url, terminate_backends

__all__ = ["no_backoff", "pg_url"]

pytestmark = pytest.mark.anyio


def _cancelled(task_id: str, body: bytes, why: str) -> bytes:
    return f'{{"id":"{task_id}","status":"cancelled","why":"{why}"}}'.encode()


def _queue(db: object, worker: str, lease: float = 30.0) -> Queue:
    return Queue(db, worker_id=worker, lease=lease, cancelled=_cancelled)  # type: ignore[arg-type]


def _tasks(*ids: str) -> list[tuple[str, bytes]]:
    return [(i, f'{{"id":"{i}","prompt":"x"}}'.encode()) for i in ids]


async def test_schema_is_created_once_and_versioned(pg_url: str) -> None:
    """The first start creates the tables; later starts find the version and change nothing."""
    async with open_database(pg_url) as db:
        assert await migrate(db) == 0
        assert await migrate(db) == SCHEMA_VERSION
        await check_readable(db)


async def test_newer_schema_is_refused(pg_url: str) -> None:
    """A database written by a newer runner is refused with a message saying what to do."""
    async with open_database(pg_url) as db:
        await migrate(db)
        await db.execute("INSERT INTO runner_schema (version) VALUES ($1)", SCHEMA_VERSION + 1)
        newer = rf"schema version {SCHEMA_VERSION + 1}, newer than this runner"
        with pytest.raises(UsageError, match=newer):
            await migrate(db)
        with pytest.raises(UsageError, match="upgrade runner"):
            await check_readable(db)


async def test_unused_database_is_not_readable(pg_url: str) -> None:
    """Reading metrics from a database no worker set up says so."""
    async with open_database(pg_url) as db:
        with pytest.raises(UsageError, match="holds no runner data yet"):
            await check_readable(db)


async def test_unreachable_database_is_one_message_without_password() -> None:
    """A server that does not answer is a UsageError naming the URL, never the password."""
    url = "postgresql://bob:hunter2@127.0.0.1:1/db"
    with pytest.raises(UsageError) as info:
        async with open_database(url):
            pass
    text = str(info.value)
    assert "cannot reach the cluster database postgresql://bob:***@127.0.0.1:1/db" in text
    assert "hunter2" not in text
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_not_a_postgres_url_is_refused() -> None:
    """A URL of another scheme says what a PostgreSQL URL looks like."""
    with pytest.raises(UsageError, match=r"is not a PostgreSQL URL; write postgresql://"):
        async with open_database("mysql://x@y/z"):
            pass


async def test_accept_keeps_first_row_of_a_known_id(pg_url: str) -> None:
    """A repeated id is a duplicate that shows the first submission's row."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w1")
        assert await q.accept(_tasks("a", "b")) == [None, None]
        again = await q.accept(_tasks("b", "c"))
        assert again is not None
        assert again[1] is None
        assert again[0] is not None
        assert again[0].id == "b"
        assert again[0].status == "pending"
        assert [c.id for c in await q.claim(10)] == ["a", "b", "c"]


async def test_accept_refuses_past_room(pg_url: str) -> None:
    """With no room for the whole batch, QueueFull says how much is left; nothing goes in."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w1")
        assert await q.accept(_tasks("a", "b"), room=3) == [None, None]
        with pytest.raises(QueueFull) as info:
            await q.accept(_tasks("c", "d"), room=3)
        assert info.value.room == 1
        assert await q.unfinished() == 2
        # A known id takes no new place.
        assert await q.accept(_tasks("b", "c"), room=3) == [Stored(id="b", status="pending"), None]


async def test_concurrent_claims_never_share_a_task(pg_url: str) -> None:
    """SKIP LOCKED: workers claiming at once get disjoint tasks, and all of them."""
    async with open_database(pg_url, max_size=8) as db:
        await migrate(db)
        await _queue(db, "x").accept(_tasks(*(f"t{i}" for i in range(200))))
        got: dict[str, list[str]] = {f"w{n}": [] for n in range(4)}

        async def drain(worker: str) -> None:
            q = _queue(db, worker)
            while batch := await q.claim(7):
                got[worker].extend(c.id for c in batch)

        async with anyio.create_task_group() as tg:
            for worker in got:
                tg.start_soon(drain, worker)
        every = [i for ids in got.values() for i in ids]
        assert sorted(every) == sorted(f"t{i}" for i in range(200))
        assert len(set(every)) == 200


async def test_terminal_write_needs_the_lease(pg_url: str) -> None:
    """After a lease runs out and another worker reclaims the task, the first cannot finish it."""
    async with open_database(pg_url) as db:
        await migrate(db)
        slow, other = _queue(db, "slow", lease=0.2), _queue(db, "other")
        await slow.accept(_tasks("t"))
        (mine,) = await slow.claim(1)
        await anyio.sleep(0.4)
        assert await other.reclaim() == (1, 0)
        (theirs,) = await other.claim(1)
        assert theirs.claims == mine.claims + 1
        renewal = await slow.renew(["t"])
        assert renewal.lost == {"t"}
        late = Finish(id="t", claims=mine.claims, status="completed", result=b'{"by":"slow"}')
        assert await slow.finish([late]) == set()
        won = Finish(id="t", claims=theirs.claims, status="completed", result=b'{"by":"other"}')
        assert await other.finish([won]) == {"t"}
        # The same write again (a retry whose first answer was lost) is known
        # as written; any other result for the id is not, and changes nothing.
        assert await other.finish([won]) == {"t"}
        again = Finish(id="t", claims=theirs.claims, status="failed", result=b'{"by":"other2"}')
        assert await other.finish([again]) == set()
        assert await slow.finish([late]) == set()
        stored = await other.get("t")
        assert stored is not None
        assert stored.result == b'{"by":"other"}'


async def test_renewed_lease_is_not_reclaimed(pg_url: str) -> None:
    """A worker that keeps renewing keeps its task."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w", lease=0.3)
        await q.accept(_tasks("t"))
        await q.claim(1)
        for _ in range(4):
            await anyio.sleep(0.1)
            assert (await q.renew(["t"])).lost == frozenset()
        assert await _queue(db, "other").reclaim() == (0, 0)


async def test_cancel_of_a_waiting_task_is_final_at_once(pg_url: str) -> None:
    """DELETE of a task no worker holds writes its cancelled result; no worker claims it."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w")
        await q.accept(_tasks("t"))
        view = await q.cancel("t")
        assert view is not None
        assert view.status == "cancelled"
        assert view.result is not None
        assert b"before it started" in view.result
        assert await q.claim(5) == []
        assert await q.cancel("nope") is None


async def test_cancel_of_a_held_task_reaches_its_owner(pg_url: str) -> None:
    """DELETE of a claimed task notifies the owner and is seen by its next renewal."""
    async with open_database(pg_url) as db:
        await migrate(db)
        owner = _queue(db, "owner")
        await owner.accept(_tasks("t"))
        await owner.claim(1)
        heard: list[str] = []
        got = anyio.Event()

        def on_cancel(task_id: str) -> None:
            heard.append(task_id)
            got.set()

        async with anyio.create_task_group() as tg:
            await tg.start(db.listen, {"runner_cancel": on_cancel}, lambda: None)
            view = await _queue(db, "elsewhere").cancel("t")
            assert view is not None
            assert view.result is None
            with anyio.fail_after(5):
                await got.wait()
            tg.cancel_scope.cancel()
        assert heard == ["t"]
        assert (await owner.renew(["t"])).cancel == {"t"}


async def test_cancelled_task_of_a_dead_worker_is_finished_by_the_sweep(pg_url: str) -> None:
    """A cancelled task whose owner stopped renewing ends cancelled, not run again."""
    async with open_database(pg_url) as db:
        await migrate(db)
        dead = _queue(db, "dead", lease=0.1)
        await dead.accept(_tasks("t", "u"))
        await dead.claim(2)
        await _queue(db, "x").cancel("t")
        await anyio.sleep(0.3)
        assert await _queue(db, "x").reclaim() == (1, 1)
        t = await dead.get("t")
        assert t is not None
        assert t.status == "cancelled"
        assert t.result is not None
        assert b"the worker running it stopped" in t.result
        assert [c.id for c in await _queue(db, "y").claim(5)] == ["u"]


async def test_release_hands_tasks_back(pg_url: str) -> None:
    """A worker stopping gracefully gives its unfinished tasks back at once."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w")
        await q.accept(_tasks("a", "b"))
        await q.claim(2)
        assert await q.release(["a", "b"]) == 2
        assert [c.id for c in await _queue(db, "v").claim(5)] == ["a", "b"]


@pytest.mark.usefixtures("no_backoff")
async def test_operations_ride_out_terminated_connections(pg_url: str) -> None:
    """Every pooled connection cut by the server: the next operation reconnects and succeeds."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w")
        await q.accept(_tasks("a"))
        assert await terminate_backends(pg_url) >= 1
        assert await q.accept(_tasks("b")) == [None]
        assert [c.id for c in await q.claim(5)] == ["a", "b"]
        # Cut while a statement is in flight: that one is tried again.
        async with anyio.create_task_group() as tg:
            tg.start_soon(db.fetchval, "SELECT pg_sleep(0.5)")
            await anyio.sleep(0.2)
            await terminate_backends(pg_url)
        assert db.retries >= 1


async def test_listener_reconnects_and_says_so(pg_url: str) -> None:
    """A LISTEN connection cut by the server comes back, and subscribers are told to look again."""
    async with open_database(pg_url) as db:
        await migrate(db)
        reconnected = anyio.Event()
        heard = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(db.listen, {"runner_tasks": lambda _: heard.set()}, reconnected.set)
            await terminate_backends(pg_url)
            with anyio.fail_after(10):
                await reconnected.wait()
            await _queue(db, "w").accept(_tasks("a"))
            with anyio.fail_after(5):
                await heard.wait()
            tg.cancel_scope.cancel()


async def test_admin_url_is_not_a_runner_database() -> None:
    """Sanity: the per-test databases are really created and dropped (no leftovers)."""
    from tests.pg_support import create_database, drop_database, server_url

    url = await create_database()
    await drop_database(url)
    conn = await asyncpg.connect(server_url())
    try:
        name = url.rsplit("/", 1)[-1]
        assert not await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()


async def test_purge_removes_only_results_past_retention(pg_url: str) -> None:
    """Finished tasks older than the retention go; unfinished and recent ones stay."""
    async with open_database(pg_url) as db:
        await migrate(db)
        q = _queue(db, "w")
        await q.accept(_tasks("old", "new", "open"))
        claims = {c.id: c for c in await q.claim(3)}
        done = [
            Finish(id=i, claims=claims[i].claims, status="completed", result=b"{}")
            for i in ("old", "new")
        ]
        assert await q.finish(done) == {"old", "new"}
        await db.execute(
            "UPDATE runner_tasks SET finished_at = now() - interval '2 hours' WHERE id = 'old'"
        )
        assert await q.purge(3600) == 1
        assert await q.get("old") is None
        assert await q.get("new") is not None
        assert await q.get("open") is not None


async def test_task_list_pages_newest_first_from_the_database(pg_url: str) -> None:
    """GET /v1/tasks in cluster mode: keyset pages over every worker's tasks, no row twice."""
    from runner.service._cluster import ClusterWorker
    from runner.service._journal import BadCursor

    async with open_database(pg_url) as db:
        await migrate(db)
        queue = _queue(db, "w1")
        await queue.accept(_tasks("a", "b", "c"), room=100, same=lambda x, y: x == y)
        await queue.accept(_tasks("d", "e"), room=100, same=lambda x, y: x == y)
        tagged = [("t", b'{"id":"t","prompt":"x","tags":["nightly"]}')]
        await queue.accept(tagged, room=100, same=lambda x, y: x == y)
        worker = ClusterWorker(queue, queue_size=100, concurrency=1, prefetch=1)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await worker.list_tasks(limit=2, cursor=cursor)
            pages += 1
            seen += [t.id for t in page.tasks]
            assert all(t.status == "pending" and t.finished_at is None for t in page.tasks)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        # The second batch was submitted later; ties (one transaction) by id, descending.
        assert seen == ["t", "e", "d", "c", "b", "a"]
        assert pages == 3
        assert [t.id for t in (await worker.list_tasks(limit=10, tag="nightly")).tasks] == ["t"]
        assert (await worker.list_tasks(limit=10, tag="other")).tasks == []
        assert (await worker.list_tasks(limit=10, status="completed")).tasks == []
        later = worker.wall() + 60
        assert (await worker.list_tasks(limit=10, since=later)).tasks == []
        with pytest.raises(BadCursor):
            await worker.list_tasks(limit=2, cursor="not-a-cursor")


async def test_a_driver_warning_is_one_line_with_two_databases_open(pg_url: str) -> None:
    """With two databases open, a warning of asyncpg's pool logger is one notice line."""
    first: list[str] = []
    second: list[str] = []
    driver = logging.getLogger("asyncpg")
    handlers = list(driver.handlers)

    def warn(text: str) -> None:
        # The pool's own logger, as when it cannot refill itself.
        try:
            raise ConnectionError("the database system is shutting down")
        except ConnectionError:
            asyncpg.pool.logger.warning(text, exc_info=True)

    async with open_database(pg_url, notice=first.append):
        async with open_database(pg_url, notice=second.append):
            warn("error while reconnecting")
        warn("still down")
    # Each warning once: to the newest open database's notice.
    down = " (ConnectionError: the database system is shutting down)"
    assert second == [f"database driver: error while reconnecting{down}"]
    assert first == [f"database driver: still down{down}"]
    assert (driver.handlers, driver.propagate) == (handlers, True)


async def test_a_driver_warning_never_repeats_the_database_password(pg_url: str) -> None:
    """A driver message quoting the URL's password shows ``***`` in its place (trust auth here)."""
    seen: list[str] = []
    parts = urlsplit(pg_url)
    host = f"{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:pw-Zq81xKe@{host}"))
    async with open_database(url, notice=seen.append):
        asyncpg.pool.logger.warning("could not connect with %s", url)
    assert len(seen) == 1
    assert "pw-Zq81xKe" not in seen[0], seen
    assert "***" in seen[0], seen
