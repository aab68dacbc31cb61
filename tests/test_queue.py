"""The dispatcher's queue: FIFO, bounded, and nothing lost to a cancellation or a close.

Pure core: asyncio and trio.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from runner._queue import FutureEvent, Inbox, TaskQueue, event_class

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_items_come_out_in_order() -> None:
    """What goes in comes out first in, first out."""
    q: TaskQueue[int] = TaskQueue(3)
    assert all(q.put_nowait(i) for i in range(3))
    assert [await q.get(), await q.get(), await q.get()] == [0, 1, 2]


async def test_a_full_queue_refuses_put_nowait_and_put_waits_its_turn() -> None:
    """Past maxsize put_nowait is False; put waits, and senders get in in their order."""
    q: TaskQueue[int] = TaskQueue(1)
    assert q.put_nowait(0)
    assert not q.put_nowait(99)
    async with anyio.create_task_group() as tg:
        tg.start_soon(q.put, 1)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(q.put, 2)
        await anyio.lowlevel.checkpoint()
        assert len(q) == 1
        got = [await q.get() for _ in range(3)]
    assert got == [0, 1, 2]


async def test_get_nowait_takes_in_order_lets_a_waiting_sender_in_and_never_waits() -> None:
    """get_nowait: the oldest item, a waiting sender admitted behind it; None when empty."""
    q: TaskQueue[int] = TaskQueue(1)
    assert q.get_nowait() is None
    assert q.put_nowait(0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(q.put, 1)
        await anyio.wait_all_tasks_blocked()  # the sender waits: the queue is full
        assert q.get_nowait() == 0
        assert len(q) == 1  # the sender's item is in
    assert q.get_nowait() == 1
    assert q.get_nowait() is None
    q.close()
    assert q.get_nowait() is None


async def test_a_parked_worker_gets_the_next_item_directly() -> None:
    """A worker waiting on an empty queue receives the next item put."""
    q: TaskQueue[str] = TaskQueue(1)
    got: list[str | None] = []

    async def worker() -> None:
        got.append(await q.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.lowlevel.checkpoint()
        assert q.put_nowait("x")
    assert got == ["x"]
    assert len(q) == 0


async def test_close_drains_then_ends_and_refuses_senders() -> None:
    """After close, queued items still come out, then None; put raises ClosedResourceError."""
    q: TaskQueue[int] = TaskQueue(2)
    q.put_nowait(1)
    q.close()
    assert await q.get() == 1
    assert await q.get() is None
    with pytest.raises(anyio.ClosedResourceError):
        q.put_nowait(2)
    with pytest.raises(anyio.ClosedResourceError):
        await q.put(2)


async def test_close_wakes_parked_workers_and_waiting_senders() -> None:
    """Parked workers get None and a waiting sender gets ClosedResourceError."""
    q: TaskQueue[int] = TaskQueue(1)
    q.put_nowait(0)
    outcomes: list[object] = []

    async def sender() -> None:
        try:
            await q.put(1)
        except anyio.ClosedResourceError:
            outcomes.append("closed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.lowlevel.checkpoint()
        q.close()
    assert outcomes == ["closed"]
    empty: TaskQueue[int] = TaskQueue(1)
    async with anyio.create_task_group() as tg:

        async def worker() -> None:
            outcomes.append(await empty.get())

        tg.start_soon(worker)
        await anyio.lowlevel.checkpoint()
        empty.close()
    assert outcomes == ["closed", None]


async def test_a_cancelled_sender_withdraws_its_item() -> None:
    """A sender cancelled while waiting for room leaves nothing behind."""
    q: TaskQueue[int] = TaskQueue(1)
    q.put_nowait(0)
    with anyio.move_on_after(0.01):
        await q.put(1)
    assert await q.get() == 0
    assert q.put_nowait(2)
    assert await q.get() == 2


async def test_an_item_handed_to_a_worker_being_cancelled_is_not_lost() -> None:
    """A worker cancelled just as it is handed an item keeps it or puts it back at the front."""
    q: TaskQueue[int] = TaskQueue(2)
    got: list[int | None] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def worker() -> None:
            with scope:
                got.append(await q.get())

        tg.start_soon(worker)
        await anyio.lowlevel.checkpoint()
        scope.cancel()
        q.put_nowait(7)  # handed over while the worker's wake-up may be a cancellation
    if scope.cancelled_caught:
        assert got == []
        assert len(q) == 1
        assert await q.get() == 7
    else:
        assert got == [7]
        assert len(q) == 0


async def test_a_worker_cancelled_after_being_handed_an_item_puts_it_back(
    anyio_backend: str,
) -> None:
    """asyncio: the item set on a parked worker's future goes back to the front if it is cancelled.

    The worker's future already holds the item when its task is cancelled,
    before it ran again: the cancellation wins, and the item is not lost.
    """
    if anyio_backend != "asyncio":
        pytest.skip("asyncio's parked workers wait on a bare future")
    q: TaskQueue[int] = TaskQueue(2)
    worker = asyncio.get_running_loop().create_task(q.get())
    await asyncio.sleep(0)  # the worker parks
    assert q.put_nowait(7)  # handed over: the future's result
    assert q.put_nowait(8)  # no parked worker left: queued
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert [q.get_nowait(), q.get_nowait(), q.get_nowait()] == [7, 8, None]


async def test_each_backend_parks_on_its_own_primitive(anyio_backend: str) -> None:
    """asyncio parks on a bare future (FutureEvent); trio keeps anyio's Event."""
    cls = event_class()
    if anyio_backend == "asyncio":
        assert cls is FutureEvent
    else:
        assert issubclass(cls, anyio.Event)
    early = cls()
    early.set()
    early.set()  # a second set is harmless
    with anyio.fail_after(1):
        await early.wait()  # set before the wait: returns at once


async def test_a_wait_cancelled_before_the_set_leaves_the_set_harmless() -> None:
    """A parked waiter cancelled, then set: no error, and the cancellation is what it saw."""
    event = event_class()()
    outcome: list[str] = []

    async def park() -> None:
        try:
            await event.wait()
            outcome.append("woken")
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(park)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    event.set()
    assert outcome == ["cancelled"]


async def test_the_inbox_wakes_its_reader_and_keeps_order() -> None:
    """A parked reader is woken by a put; what arrived meanwhile comes out in order."""
    inbox: Inbox[int] = Inbox()
    with pytest.raises(anyio.WouldBlock):
        inbox.get_nowait()
    got: list[int] = []

    async def read(n: int) -> None:
        while len(got) < n:
            item = await inbox.get()
            got.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, 3)
        await anyio.wait_all_tasks_blocked()
        for i in range(3):
            inbox.put(i)
    assert got == [0, 1, 2]


async def test_a_cancelled_inbox_read_loses_nothing_and_a_closed_inbox_refuses() -> None:
    """A reader cancelled while parked leaves later items in place; put after close raises."""
    inbox: Inbox[str] = Inbox()
    with anyio.move_on_after(0.01):
        await inbox.get()
    inbox.put("kept")
    assert inbox.get_nowait() == "kept"
    inbox.close()
    with pytest.raises(anyio.ClosedResourceError):
        inbox.put("late")
