"""The dispatcher's worker pool on asyncio: one bare task per worker, stopped by stopping its work.

The pool has one worker per unit of ``concurrency``, thousands of them in a
big run, each alive for the whole run.  Started through an anyio task group,
every worker carried about twenty objects besides its own task and
coroutine (anyio's task handle with its cancel scope, an event, a wrapper
coroutine, a done-callback closure and its cells, the task's state and its
weak reference), and the garbage collector walks them all on every full
collection: with 5,000 workers, about 100,000 objects, more than the whole
program holds before the runner opens (issue 13, docs/benchmarks.md).
Here a worker is its asyncio task, that task's context and the worker's
coroutine.

What the task group did, :class:`WorkerPool` does:

* :meth:`~WorkerPool.join` returns once every worker has returned.
* A worker that raises ends the pool: the others are stopped (below) and
  ``join`` raises that error.
* Cancelled (the runner's task group is cancelled: an error or a cancelled
  scope around the runner), ``join`` does not cancel the workers' tasks.
  It calls ``stop`` (the dispatcher's ``cancel_all``: the queue closed,
  every task it holds cancelled through its attempt's own scope), so a
  worker ends its task the ordinary way, with the attempt's ``cancelled``
  metric event, and returns.  A worker still running ``grace`` seconds later (a metrics sink
  that never takes the event, say) is cancelled outright.  The wait is
  shielded from the enclosing scope, which would otherwise cancel it again
  at every turn of the loop; the cancellation is raised once every worker
  has ended.

Trio has no such costs to save; the dispatcher keeps anyio's task group there.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

#: What a worker is: a coroutine function run once per worker.
Worker = Callable[[], Coroutine[Any, Any, None]]


class WorkerPool:
    """``count`` runs of ``worker`` as asyncio tasks (module docstring)."""

    __slots__ = ("_error", "_left", "_tasks", "_waiter")

    def __init__(self, worker: Worker, count: int) -> None:
        loop = asyncio.get_running_loop()
        self._left = count
        #: The first exception a worker raised (its cancellation aside).
        self._error: BaseException | None = None
        #: Woken when a worker ends with an error or the last one ends.
        self._waiter: asyncio.Future[None] | None = None
        self._tasks = [loop.create_task(worker()) for _ in range(count)]
        # One bound method and one empty context for every task's callback:
        # the callback reads no context variable, and add_done_callback
        # would otherwise copy the current context once per worker.
        ended = self._ended
        quiet = contextvars.Context()
        for task in self._tasks:
            task.add_done_callback(ended, context=quiet)

    @property
    def running(self) -> int:
        """How many workers have not ended yet."""
        return self._left

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._left -= 1
        if not task.cancelled():
            error = task.exception()
            if error is not None and self._error is None:
                self._error = error
        if self._left == 0 or self._error is not None:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _all_ended(self) -> bool:
        return self._left == 0

    def _failed_or_ended(self) -> bool:
        return self._left == 0 or self._error is not None

    async def join(self, stop: Callable[[], None], grace: float) -> None:
        """Return once every worker has returned; on an error or cancellation, stop them first.

        ``stop`` makes the workers return on their own; those still running
        ``grace`` seconds after it are cancelled.  A worker's error is
        raised here (the first one, once every worker has ended).
        """
        try:
            await self._until(self._failed_or_ended)
        except BaseException:
            await self._wind_down(stop, grace)
            raise
        if self._error is not None:
            await self._wind_down(stop, grace)
            raise self._error

    async def _wind_down(self, stop: Callable[[], None], grace: float) -> None:
        stopped = False
        try:
            stop()
            stopped = True
        finally:
            # Should stop() itself fail, no worker may outlive the pool:
            # they are cancelled at once, and its error raised after.
            with anyio.CancelScope(shield=True):
                if stopped:
                    with anyio.move_on_after(grace):
                        await self._until(self._all_ended)
                for task in self._tasks:
                    task.cancel("the worker pool is stopping")
                await self._until(self._all_ended)
