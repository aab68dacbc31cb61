"""The dispatcher's queue: a bounded FIFO between intake and the worker pool.

It does what an anyio memory object stream of contexts did, for less: every
task passes through it once, and with many workers parked on it (one per
``concurrency``) the stream's per-hand-over costs showed in the benchmarks
(a checkpoint before every blocking receive, a task lookup to check the
receiver for a pending cancellation, a new Event through the backend lookup
each time).  Here a parked worker waits on one primitive of the running
backend, and an item taken from a full queue lets one waiting sender in, in
order.  On asyncio a parked worker waits on a bare future whose result is
the item handed to it: one object per park, set by the sender directly (an
``anyio.Event`` there wraps an ``asyncio.Event``, which makes a future of its
own and a waiter list on every wait; and a worker parks about once per task
when tasks arrive as fast as they are done).  On trio it waits on an
``anyio.Event``, with a list that receives the item.  Waiting senders use
the backend's :func:`event_class` (:class:`FutureEvent` on asyncio).

Cancellation: a worker cancelled while parked puts back an item handed to it
at the same moment, so nothing is dropped; a sender cancelled while waiting
withdraws its item.  :meth:`close` wakes everyone: workers get ``None`` once
the queue is empty, waiting senders get :class:`anyio.ClosedResourceError`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Generic, Protocol, TypeVar

import anyio
import sniffio

T = TypeVar("T")


class Wakeable(Protocol):
    """What a parked worker or sender waits on: ``anyio.Event``'s ``set`` and ``wait``."""

    def set(self) -> None: ...

    def wait(self) -> Awaitable[object]: ...


class FutureEvent:
    """A one-shot event on asyncio: one future, set at most once, awaited by one task.

    ``wait()`` returns the future itself, so awaiting it adds no coroutine;
    a cancelled waiter cancels the future, and a later ``set`` is a no-op.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        return self._future


def event_class() -> type[Wakeable]:
    """The parking primitive for the running backend (call it inside the event loop)."""
    if sniffio.current_async_library() == "asyncio":
        return FutureEvent
    return type(anyio.Event())


class TaskQueue(Generic[T]):
    """A FIFO of at most ``maxsize`` items (items handed straight to a parked worker aside)."""

    __slots__ = ("_closed", "_event", "_getters", "_items", "_maxsize", "_putters", "_waiting")

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: deque[T] = deque()
        #: Parked workers on asyncio: each a bare future, its result the item
        #: handed over (``None``: closed).  One object per park, no wrapper.
        self._waiting: deque[asyncio.Future[T | None]] = deque()
        #: Parked workers on trio: the Event that wakes one, and the list its item goes in.
        self._getters: deque[tuple[Wakeable, list[T]]] = deque()
        #: Waiting senders: their Event, and a list holding their item until taken.
        self._putters: deque[tuple[Wakeable, list[T]]] = deque()
        self._closed = False
        # The running backend's Event class, looked up once: anyio.Event()
        # otherwise asks sniffio which backend runs on every call.
        self._event: type[Wakeable] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _new_event(self) -> Wakeable:
        if self._event is None:
            self._event = event_class()
        return self._event()

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` (or hand it to a parked worker); False when full.

        Raises :class:`anyio.ClosedResourceError` once closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        waiting = self._waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():  # not one whose worker is being cancelled
                future.set_result(item)
                return True
        if self._getters:
            event, box = self._getters.popleft()
            box.append(item)
            event.set()
            return True
        if len(self._items) < self._maxsize:
            self._items.append(item)
            return True
        return False

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full.

        Raises :class:`anyio.ClosedResourceError` if the queue is (or gets)
        closed before the item is taken in.
        """
        if self.put_nowait(item):
            return
        event = self._new_event()
        slot = [item]
        entry = (event, slot)
        self._putters.append(entry)
        try:
            await event.wait()
        except BaseException:
            if slot and entry in self._putters:
                self._putters.remove(entry)
            raise
        if slot:
            raise anyio.ClosedResourceError  # woken by close(), not taken in

    def get_nowait(self) -> T | None:
        """The next item if one is queued; ``None`` if none is (closed or not)."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters:
            self._admit()
        return item

    async def get(self) -> T | None:
        """The next item, waiting for one; ``None`` once closed and empty."""
        items = self._items
        if items:
            item = items.popleft()
            if self._putters:
                self._admit()
            return item
        if self._closed:
            return None
        if self._event is None:
            self._event = event_class()
        if self._event is FutureEvent:
            # asyncio: a bare future whose result is the item (one object a park).
            future: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
            waiting = self._waiting
            waiting.append(future)
            try:
                return await future
            except BaseException:
                if future.done() and not future.cancelled():
                    handed = future.result()
                    if handed is not None:
                        # Handed over as the cancellation landed: back to the front.
                        items.appendleft(handed)
                elif future in waiting:  # not if close() took it out already
                    waiting.remove(future)
                raise
        event = self._event()
        box: list[T] = []
        entry = (event, box)
        self._getters.append(entry)
        try:
            await event.wait()
        except BaseException:
            if box:
                # Handed over as the cancellation landed: back to the front.
                items.appendleft(box[0])
            elif entry in self._getters:  # not if close() took it out already
                self._getters.remove(entry)
            raise
        return box[0] if box else None

    def _admit(self) -> None:
        event, slot = self._putters.popleft()
        self._items.append(slot.pop())
        event.set()

    def close(self) -> None:
        """Refuse new items; wake parked workers (``None``) and waiting senders (closed)."""
        self._closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
        while self._getters:
            self._getters.popleft()[0].set()
        while self._putters:
            self._putters.popleft()[0].set()


class Inbox(Generic[T]):
    """An unbounded FIFO with one reader: what ``run_many`` waits on (Results and pulled tasks).

    Its writers bound it (``run_many`` keeps at most a window of each kind
    in flight), so ``put`` never waits.  It replaces an anyio memory object
    stream, whose every hand-over looks up the backend and, with the reader
    parked, makes an Event: the reader parks here (on asyncio a bare future,
    on trio an ``anyio.Event``) and drains everything that arrived meanwhile
    without waiting.  After :meth:`close`, ``put`` raises
    :class:`anyio.ClosedResourceError`.
    """

    __slots__ = ("_closed", "_event", "_future", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        #: The parked reader's future (asyncio) or Event (trio).
        self._future: asyncio.Future[None] | None = None
        self._waiter: Wakeable | None = None
        self._closed = False
        self._event: type[Wakeable] | None = None

    def put(self, item: T) -> None:
        """Add ``item``, waking the reader if it waits."""
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append(item)
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def get_nowait(self) -> T:
        """The oldest item; :class:`anyio.WouldBlock` when there is none."""
        if self._items:
            return self._items.popleft()
        raise anyio.WouldBlock

    async def get(self) -> T:
        """The oldest item, waiting for one (a cancelled wait loses nothing)."""
        items = self._items
        while not items:
            if self._event is None:
                self._event = event_class()
            if self._event is FutureEvent:
                future = self._future = asyncio.get_running_loop().create_future()
                try:
                    await future
                finally:
                    self._future = None
                continue
            waiter = self._waiter = self._event()
            try:
                await waiter.wait()
            finally:
                self._waiter = None
        return items.popleft()

    def close(self) -> None:
        """Refuse further items."""
        self._closed = True
