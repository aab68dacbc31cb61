"""The attempt's cancel scope: anyio's on trio, a lighter one of the same behaviour on asyncio.

Every attempt runs in one cancel scope (``runner._dispatcher``): cancelled by
``handle.cancel()``, given a deadline when its call outlives a tick
(``runner._deadline``), left by a normal return or by its own cancellation,
never hiding anyone else's.  anyio's asyncio ``CancelScope`` does that and
much more (nesting, shielding, task-group bookkeeping), and entering and
leaving it was about a tenth of the dispatcher's cost per task in the
benchmarks' profiles (issue 13).  The attempt needs none of the rest, so on
asyncio :class:`AsyncioScope` does only this:

* ``cancel()`` cancels the task that entered the scope while it waits, the
  way anyio delivers a cancellation: never the running task itself (its
  pending cancellation could land after the scope), never a task whose
  awaited future is already done (the result would be lost); in those
  cases, and until the scope is left, delivery is retried on the next loop
  turn.
* Leaving the scope undoes its own ``Task.cancel()`` calls (``uncancel``)
  and swallows the ``CancelledError`` only if no other cancellation is
  pending on the task (``Task.cancelling()`` back where it was on entry):
  an enclosing anyio scope's cancellation (a shutdown) propagates.  Should
  both land in the same loop turn, asyncio folds them into one error, which
  this scope takes as its own; anyio re-delivers its cancellation at the
  task's next wait (as for its own nested scopes, it retries until the
  scope is left), so it is delayed to there, never lost.
* ``deadline`` set while the scope is active arms one loop timer that
  calls ``cancel()``.

:func:`scope_factory` picks the class once per dispatcher, for the running
backend.  Both classes are exercised by the dispatcher's tests, which run on
asyncio and trio, and by ``tests/test_scope.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

import anyio
import sniffio


class Cancellable(Protocol):
    """What cancelling a task in flight needs of its current scope (an attempt's, a workflow's)."""

    def cancel(self) -> None: ...


class AttemptScope(Protocol):
    """What the dispatcher and the deadline watcher use of an attempt's scope."""

    def cancel(self) -> None: ...

    @property
    def deadline(self) -> float: ...

    @deadline.setter
    def deadline(self, value: float) -> None: ...

    def __enter__(self) -> AttemptScope: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...


class AsyncioScope:
    """A cancel scope for one attempt on asyncio (module docstring)."""

    __slots__ = ("_active", "_at", "_called", "_cancels", "_deadline", "_task", "_timer")

    def __init__(self) -> None:
        self._task: asyncio.Task[object] | None = None
        self._active = False
        self._called = False
        #: Task.cancel() calls made by this scope, undone when it is left.
        self._cancels = 0
        #: Task.cancelling() when the scope was entered.
        self._at = 0
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> AsyncioScope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an attempt scope needs a running asyncio task")
        self._task = task
        self._at = task.cancelling()
        self._active = True
        if self._called:
            self._deliver()
        elif self._deadline != math.inf:
            self._arm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if not self._called or task is None:
            return False
        while self._cancels:
            task.uncancel()
            self._cancels -= 1
        if exc_type is None or not issubclass(exc_type, asyncio.CancelledError):
            return False
        # Another cancellation (an enclosing anyio scope's) is pending too: let it go on.
        return task.cancelling() <= self._at

    @property
    def cancel_called(self) -> bool:
        """Whether :meth:`cancel` was called (or the deadline passed)."""
        return self._called

    def cancel(self) -> None:
        """Cancel the attempt (at its current or next wait inside the scope)."""
        if self._called:
            return
        self._called = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._active:
            self._deliver()

    @property
    def deadline(self) -> float:
        """The loop time at which the scope cancels itself (``inf``: none)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._active and not self._called:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            self.cancel()
        else:
            self._timer = loop.call_at(self._deadline, self.cancel)

    def _deliver(self) -> None:
        task = self._task
        if not self._active or task is None or task.done():
            return
        loop = task.get_loop()
        if task is not asyncio.current_task():
            # The future the task waits on; private, and read the same way by anyio.
            waiter = getattr(task, "_fut_waiter", None)
            if (waiter is None or not waiter.done()) and not getattr(task, "_must_cancel", False):
                task.cancel("attempt scope cancelled")
                self._cancels += 1
        # Until the scope is left: the task may swallow one cancellation, or be running now.
        loop.call_soon(self._deliver)


def scope_factory() -> Callable[[], AttemptScope]:
    """The attempt scope class for the running backend (call it inside the event loop)."""
    if sniffio.current_async_library() == "asyncio":
        return AsyncioScope
    return type(anyio.CancelScope())
