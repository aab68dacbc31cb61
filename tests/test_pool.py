"""The asyncio worker pool: ends with its workers, stops them on an error or a cancellation."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import anyio
import pytest

from runner._pool import Worker, WorkerPool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Work:
    """Workers that take items until told to stop (what the dispatcher's close does)."""

    def __init__(self) -> None:
        self.stopping = anyio.Event()
        self.stop_calls = 0
        self.finished = 0
        self.started = 0

    def stop(self) -> None:
        self.stop_calls += 1
        self.stopping.set()

    async def worker(self) -> None:
        self.started += 1
        await self.stopping.wait()
        self.finished += 1


def counting_cancellations(body: Worker, counter: list[int]) -> Worker:
    """``body`` as a worker that counts, in ``counter[0]``, the times it was cancelled."""

    async def worker() -> None:
        try:
            await body()
        except asyncio.CancelledError:
            counter[0] += 1
            raise

    return worker


async def join_cancelled(
    worker: Worker, count: int, stop: Callable[[], None], grace: float
) -> tuple[WorkerPool, anyio.CancelScope]:
    """Start a pool, cancel the scope around its join once every worker is parked."""
    with anyio.CancelScope() as scope:
        pool = WorkerPool(worker, count)
        await asyncio.sleep(0)
        scope.cancel()
        await pool.join(stop, grace)
    return pool, scope


async def test_join_returns_once_every_worker_has_returned() -> None:
    done = 0

    async def worker() -> None:
        nonlocal done
        await asyncio.sleep(0)
        done += 1

    pool = WorkerPool(worker, 5)
    await pool.join(lambda: pytest.fail("stop called on a normal end"), 1.0)
    assert done == 5
    assert pool.running == 0


async def test_a_worker_error_stops_the_others_and_is_raised() -> None:
    work = Work()

    async def worker() -> None:
        if work.started == 2:
            work.started += 1
            raise KeyError("worker bug")
        await work.worker()

    pool = WorkerPool(worker, 4)
    with pytest.raises(KeyError, match="worker bug"):
        await pool.join(work.stop, 1.0)
    assert work.stop_calls == 1
    assert work.finished == 3  # the three others returned on their own
    assert pool.running == 0


async def test_cancelled_join_stops_the_workers_then_propagates() -> None:
    """The workers end through ``stop`` (no task.cancel); then the cancellation is raised."""
    work = Work()
    cancelled = [0]
    worker = counting_cancellations(work.worker, cancelled)
    pool, scope = await join_cancelled(worker, 3, work.stop, 1.0)
    assert scope.cancelled_caught
    assert (work.stop_calls, work.finished, cancelled[0]) == (1, 3, 0)
    assert pool.running == 0


async def test_the_wind_down_is_shielded_from_the_enclosing_scope() -> None:
    """A worker that needs a few loop turns to end after ``stop`` is not cut short."""
    work = Work()
    finished = 0

    async def worker() -> None:
        nonlocal finished
        await work.worker()
        for _ in range(5):  # an attempt's metric event being handed over, say
            await anyio.sleep(0.001)
        finished += 1

    await join_cancelled(worker, 3, work.stop, 5.0)
    assert finished == 3


async def test_a_worker_ignoring_stop_is_cancelled_after_the_grace() -> None:
    work = Work()
    cancelled = [0]
    stubborn = counting_cancellations(anyio.sleep_forever, cancelled)
    pool, scope = await join_cancelled(stubborn, 2, work.stop, 0.05)
    assert scope.cancelled_caught
    assert (work.stop_calls, cancelled[0], pool.running) == (1, 2, 0)


async def test_a_failing_stop_cancels_the_workers_at_once_and_is_raised() -> None:
    cancelled = [0]
    worker = counting_cancellations(anyio.sleep_forever, cancelled)

    def broken_stop() -> None:
        raise RuntimeError("stop failed")

    began = anyio.current_time()
    with pytest.raises(RuntimeError, match="stop failed"):
        await join_cancelled(worker, 2, broken_stop, 5.0)
    # At once, not after the grace (the workers were never asked to stop).
    assert anyio.current_time() - began < 2.5
    assert cancelled[0] == 2


async def test_an_idle_worker_costs_the_collector_far_fewer_objects_than_in_a_task_group() -> None:
    """The point of the pool: fewer objects per worker for every full collection to walk."""

    async def parked(count: int, spawn: object) -> float:
        release = asyncio.get_running_loop().create_future()

        async def worker() -> None:
            await asyncio.shield(release)

        gc.collect()
        before = len(gc.get_objects())
        if spawn == "pool":
            pool = WorkerPool(worker, count)
            await asyncio.sleep(0)  # every worker parked
            per_worker = (len(gc.get_objects()) - before) / count
            release.set_result(None)
            await pool.join(lambda: None, 1.0)
            return per_worker
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(worker)
            await asyncio.sleep(0)
            per_worker = (len(gc.get_objects()) - before) / count
            release.set_result(None)
        return per_worker

    in_pool = await parked(1_000, "pool")
    in_group = await parked(1_000, "group")
    # The task, its context, its coroutine (and what the worker itself waits
    # on, the same in both) against anyio's handle, scope, event, wrapper...
    assert in_pool + 10 < in_group, (in_pool, in_group)
