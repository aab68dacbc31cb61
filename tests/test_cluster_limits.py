"""Provider limits shared across workers, measured on a real PostgreSQL (asyncio only).

Each "worker" here is its own :class:`SharedLimits` with its own pool and
worker id on one database: what three worker processes do, minus the
processes (tests/test_cluster_process.py runs real ones).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from benchmarks._admissions import SELECT as ADMISSIONS
from benchmarks._admissions import check_bucket
from benchmarks._admissions import install as install_admission_log
from runner.cluster._limits import SharedLimits
from runner.cluster._pool import Database, open_database
from runner.cluster._schema import migrate
from runner.config._model import ProviderConfig, RateLimit
from tests.cluster_support import eventually
from tests.pg_support import pg_url

__all__ = ["pg_url"]

pytestmark = pytest.mark.anyio


def _provider(**kw: object) -> ProviderConfig:
    return ProviderConfig(id="p", type="simulated", **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def _workers(
    url: str,
    n: int,
    provider: ProviderConfig,
    *,
    lease: float = 30.0,
    cooldown: float = 30.0,
    failures: int = 3,
) -> AsyncIterator[list[SharedLimits]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_database(url))
        await migrate(first)
        dbs: list[Database] = [first]
        dbs += [await stack.enter_async_context(open_database(url)) for _ in range(n - 1)]
        limits = [
            SharedLimits(
                db, [provider], worker_id=f"w{i}", lease=lease, cooldown=cooldown, failures=failures
            )
            for i, db in enumerate(dbs)
        ]
        tg = await stack.enter_async_context(anyio.create_task_group())
        for lim in limits:
            await tg.start(lim.run)
            await tg.start(lim.db.listen, lim.channels(), lim.on_reconnect)
        yield limits
        tg.cancel_scope.cancel()


async def _server_offset(db: Database) -> tuple[float, float]:
    """The server's clock minus this process's ``time.time()``, and the uncertainty."""
    before = time.time()
    server = float(await db.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))
    after = time.time()
    return server - (before + after) / 2, (after - before) / 2


async def test_shared_rate_limit_holds_across_workers(pg_url: str) -> None:
    """600 rpm over three workers: the bucket admits 600 + 10/s, and no attempt starts early.

    The admissions are the ones the database decided (logged inside each
    reservation, on its clock): the k-th comes no earlier than the full
    bucket plus the refill since the first allows, exactly (float rounding
    only).  Each attempt starts (after its worker slept the debt) no earlier
    than its admission, so the k-th start is no earlier than the k-th
    admission.
    """
    provider = _provider(rate_limit=RateLimit(requests_per_minute=600), max_concurrency=1000)
    started: list[float] = []
    async with _workers(pg_url, 3, provider) as limits:
        await install_admission_log(limits[0].db)

        async def caller(lim: SharedLimits, n: int) -> None:
            admission = lim.admission(provider)
            assert admission is not None
            for _ in range(n):
                await admission.enter()
                started.append(time.time())
                admission.leave(0)

        async with anyio.create_task_group() as tg:
            for lim in limits:
                for _ in range(10):
                    tg.start_soon(caller, lim, 21)  # 630 in all: 30 past the burst
        rows = await limits[0].db.fetch(ADMISSIONS)
        offset, uncertainty = await _server_offset(limits[0].db)
    admitted = [r["admitted"] for r in rows]
    assert [r["taken"] for r in rows] == pytest.approx([1.0] * 630)  # one unit each
    _, excess = check_bucket(admitted, 600)
    assert excess <= 1e-3, excess
    # The 30 past the burst needed exactly 3 s of refill.
    assert admitted[-1] - admitted[0] >= 3.0 - 1e-4
    assert len(started) == 630
    started.sort()
    slack = uncertainty + 0.001
    early = [(k, a - (s + offset)) for k, (s, a) in enumerate(zip(started, admitted, strict=True))]
    assert max(e for _, e in early) <= slack, max(early, key=lambda ke: ke[1])


def test_the_bucket_check_counts_an_admission_past_the_bucket() -> None:
    """One admission more than 600 + 10/s allows is reported, in the excess and the window."""
    exact = [0.0] * 600 + [k / 10 for k in range(1, 601)]  # the burst, then 10/s for 60 s
    assert check_bucket(exact, 600) == (1200, 0.0)
    one_early = sorted([*exact[:-1], exact[-1] - 0.05])
    _, excess = check_bucket(sorted([*exact, 30.0]), 600)
    assert excess == pytest.approx(1.0)
    assert check_bucket(one_early, 600)[1] == pytest.approx(0.5)
    assert check_bucket([*exact, 60.0], 600)[0] == 1201  # 0 to 60 s, closed


async def test_shared_token_budget_is_charged_across_workers(pg_url: str) -> None:
    """Tokens used on one worker put the next attempt on another worker into debt."""
    provider = _provider(rate_limit=RateLimit(tokens_per_minute=6000), max_concurrency=100)
    async with _workers(pg_url, 2, provider) as (a, b):
        await a.reserve("p")
        a.queue_charge("p", 6060)  # 60 tokens over budget: 0.6 s of refill at 100/s
        # b's reservation sees the debt once a's charge is sent (next flush).
        waited = 0.0
        with anyio.fail_after(10):
            while waited == 0.0:
                waited = await b.reserve("p")
        assert 0.2 < waited <= 0.61


async def test_max_concurrency_holds_across_workers(pg_url: str) -> None:
    """max_concurrency 3 over three workers with five callers each: never more than 3 at once."""
    provider = _provider(max_concurrency=3)
    running = peak = done = 0
    async with _workers(pg_url, 3, provider) as limits:

        async def caller(lim: SharedLimits) -> None:
            nonlocal running, peak, done
            admission = lim.admission(provider)
            assert admission is not None
            for _ in range(4):
                await admission.enter()
                running += 1
                peak = max(peak, running)
                await anyio.sleep(0.02)
                running -= 1
                admission.leave(0)
                done += 1

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for lim in limits:
                    for _ in range(5):
                        tg.start_soon(caller, lim)
    assert done == 60
    assert peak == 3


async def test_slots_of_a_dead_worker_come_free_after_the_lease(pg_url: str) -> None:
    """A worker that holds slots and stops renewing loses them once the lease runs out."""
    provider = _provider(max_concurrency=1)
    async with open_database(pg_url) as db:
        await migrate(db)
        dead = SharedLimits(db, [provider], worker_id="dead", lease=0.5, cooldown=30, failures=3)
        await dead.setup()
        assert await dead.take_slot("p") == 0
        alive = SharedLimits(db, [provider], worker_id="alive", lease=0.5, cooldown=30, failures=3)
        assert await alive.take_slot("p") is None
        await anyio.sleep(0.7)
        assert await alive.take_slot("p") == 0


async def test_graceful_stop_gives_slots_back(pg_url: str) -> None:
    """Slots held when the owner task is cancelled are released at once, not after the lease."""
    provider = _provider(max_concurrency=1)
    async with open_database(pg_url) as db:
        await migrate(db)
        first = SharedLimits(db, [provider], worker_id="first", lease=60, cooldown=30, failures=3)
        async with anyio.create_task_group() as tg:
            await tg.start(first.run)
            admission = first.admission(provider)
            assert admission is not None
            await admission.enter()
            tg.cancel_scope.cancel()
        other = SharedLimits(db, [provider], worker_id="other", lease=60, cooldown=30, failures=3)
        assert await other.take_slot("p") == 0


async def test_cooldown_started_on_one_worker_is_seen_by_the_others(pg_url: str) -> None:
    """A cooldown one worker's failure starts reaches the others' registries with the time left."""
    provider = _provider()
    seen: dict[str, list[tuple[str, float]]] = {"w1": [], "w2": []}
    both = anyio.Event()
    async with _workers(pg_url, 3, provider, cooldown=30, failures=1) as (w0, w1, w2):

        def recorder(name: str) -> object:
            def cool(pid: str, seconds: float) -> None:
                seen[name].append((pid, seconds))
                if all(seen.values()):
                    both.set()

            return cool

        w1.bind(recorder("w1"))  # type: ignore[arg-type]
        w2.bind(recorder("w2"))  # type: ignore[arg-type]
        w0.record_failure("p")
        with anyio.fail_after(5):
            await both.wait()
        assert await w1.cooling("p") != {}
    for name in ("w1", "w2"):
        ((pid, seconds),) = seen[name]
        assert pid == "p"
        assert 25 < seconds <= 30


async def test_a_worker_starting_later_learns_running_cooldowns(pg_url: str) -> None:
    """Cooldowns already running are loaded when a worker starts."""
    provider = _provider()
    async with _workers(pg_url, 1, provider, cooldown=30, failures=1) as (w0,):
        w0.record_failure("p")

        async def announced() -> bool:
            return bool(await w0.cooling("p"))

        await eventually(announced, 5)
        async with open_database(pg_url) as db:
            late = SharedLimits(db, [provider], worker_id="late", lease=30, cooldown=30, failures=3)
            got: list[tuple[str, float]] = []
            late.bind(lambda pid, s: got.append((pid, s)))
            async with anyio.create_task_group() as tg:
                await tg.start(late.run)
                tg.cancel_scope.cancel()
            assert [pid for pid, _ in got] == ["p"]


async def test_a_busy_worker_gives_its_kept_slot_to_one_that_waits(pg_url: str) -> None:
    """A worker that keeps reusing its slot gives it back as soon as another one waits.

    Without the wanted notice the busy worker would keep the slot as a spare
    between its attempts for as long as it stays busy.
    """
    provider = _provider(max_concurrency=1)
    async with _workers(pg_url, 2, provider) as (busy, waiting):
        a = busy.admission(provider)
        b = waiting.admission(provider)
        assert a is not None
        assert b is not None
        stop = anyio.Event()
        round_trips: list[int] = []

        async def keep_busy() -> None:
            while not stop.is_set():
                await a.enter()
                await anyio.sleep(0.01)
                a.leave(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_busy)
            await anyio.sleep(0.3)
            with anyio.fail_after(3):
                await b.enter()
            round_trips.append(len(b.in_use))
            b.leave(0)
            stop.set()
        assert round_trips == [1]


async def test_kept_slots_save_round_trips(pg_url: str) -> None:
    """Back-to-back attempts on one worker reuse the slot they kept: one take for many."""
    provider = _provider(max_concurrency=4)
    async with _workers(pg_url, 1, provider) as (lim,):
        admission = lim.admission(provider)
        assert admission is not None
        takes = 0
        take = lim.take_slot

        async def counted(provider_id: str) -> int | None:
            nonlocal takes
            takes += 1
            return await take(provider_id)

        lim.take_slot = counted  # type: ignore[method-assign]
        for _ in range(20):
            await admission.enter()
            admission.leave(0)
        assert takes == 1


# -- the consecutive-failure count, cluster-wide --------------------------------


async def _count(lim: SharedLimits) -> int:
    return int(await lim.db.fetchval("SELECT failures FROM runner_cooldowns WHERE provider = 'p'"))


def _recorder(lim: SharedLimits) -> list[float]:
    """The cooldowns that reach ``lim``'s registry, as seconds left."""
    got: list[float] = []
    lim.bind(lambda pid, seconds: got.append(seconds))
    return got


async def test_consecutive_failures_on_different_workers_cool_the_provider_for_all(
    pg_url: str,
) -> None:
    """failures: 3, one failure on each of three workers: every worker cools p down."""
    provider = _provider()
    async with _workers(pg_url, 3, provider, cooldown=30, failures=3) as workers:
        seen = [_recorder(w) for w in workers]
        for i, w in enumerate(workers):
            w.record_failure("p")

            async def counted(n: int = i + 1) -> bool:
                # Each worker's failure is in before the next one's: "in a row".
                return await _count(workers[0]) == n % 3

            await eventually(counted, 5)

        async def everyone_cools() -> bool:
            return all(seen)

        await eventually(everyone_cools, 5)
        assert await workers[0].cooling("p") != {}
    for got in seen:
        # The worker whose failure started it applies it at once, and again
        # from the notification (the registry keeps one cooldown).
        assert got
        assert all(25 < seconds <= 30 for seconds in got)


async def test_a_success_on_any_worker_starts_the_count_again(pg_url: str) -> None:
    """Two failures on w0, a success on w1, two more failures: no cooldown; a third one: cooled."""
    provider = _provider()
    async with _workers(pg_url, 3, provider, cooldown=30, failures=3) as (w0, w1, w2):
        seen = _recorder(w2)

        async def count_is(n: int) -> None:
            async def check() -> bool:
                return await _count(w0) == n

            await eventually(check, 5)

        w0.record_failure("p")
        w0.record_failure("p")
        await count_is(2)
        # w1 never failed; it learnt of w0's failures from the notification,
        # so its success is sent rather than assumed to change nothing.
        await eventually(lambda: _true("p" in w1._failing), 5)
        w1.record_success("p")
        await count_is(0)
        w0.record_failure("p")
        w2.record_failure("p")
        await count_is(2)
        await anyio.sleep(0.3)  # time for a wrong cooldown to show
        assert seen == []
        assert await w0.cooling("p") == {}
        w1.record_failure("p")

        async def cooled() -> bool:
            return bool(seen)

        await eventually(cooled, 5)
        # The count starts again from zero once the cooldown has started.
        assert await _count(w0) == 0


async def _true(value: bool) -> bool:
    return value


async def test_successes_cost_nothing_while_nothing_failed(pg_url: str) -> None:
    """A worker that has seen no failure sends no success: the hot path stays free."""
    provider = _provider()
    async with _workers(pg_url, 1, provider) as (w0,):
        sent: list[object] = []
        send = w0._send_outcomes

        async def counted() -> None:
            sent.append(dict(w0._outcomes))
            await send()

        w0._send_outcomes = counted  # type: ignore[method-assign]
        for _ in range(100):
            w0.record_success("p")
        await anyio.sleep(0.3)
        assert sent == []
        w0.record_failure("p")
        await eventually(lambda: _true(bool(sent)), 5)
        w0.record_success("p")
        await eventually(lambda: _true(len(sent) == 2), 5)
        assert sent == [{"p": (False, 1)}, {"p": (True, 0)}]
        assert await _count(w0) == 0


async def test_concurrent_failures_from_two_pools_are_all_counted(pg_url: str) -> None:
    """Two workers (two pools) flushing failures at once: the count is their exact sum."""
    provider = _provider()
    per_worker = 300
    async with _workers(pg_url, 2, provider, failures=10_000) as (w0, w1):

        async def fail(lim: SharedLimits) -> None:
            for i in range(per_worker):
                lim.record_failure("p")
                if i % 7 == 0:
                    # Spread over many flushes, so the two workers' updates overlap.
                    await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail, w0)
            tg.start_soon(fail, w1)

        async def all_in() -> bool:
            return await _count(w0) == 2 * per_worker

        await eventually(all_in, 10)
