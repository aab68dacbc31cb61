"""Attempt deadlines, set on the attempt's own cancel scope, only for calls that last.

The dispatcher owns each attempt's deadline: the attempt's one cancel scope
gets ``deadline = call start + provider timeout``.  Setting a scope's deadline
costs a timer in the event loop's heap, one per attempt, which the
benchmarks measured at about an eighth of the dispatcher's whole cost per
task (27,000 of 199,000 instructions, zero-latency provider), almost all of
it for calls that answer long before their deadline.

:class:`Deadlines` therefore sets the deadline late but exactly: a call is
registered when it starts (its scope and deadline put in a dict) and
unregistered when it ends, and a watcher task sets the scope's deadline, the
one computed at the start, on every call still running one to two ticks
later.  A tick is a quarter of the shortest provider timeout (at most one
second), so a deadline is always set well before it falls due and fires on
time; calls that end within a tick never touch the timer heap.  Nothing of a
call outlives it here: an ended call's scope is dropped at once, not kept
for the watcher's next pass (with thousands of calls a second, a list of
ended entries was tens of thousands of objects for the garbage collector).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import anyio
import sniffio

from runner._scope import AttemptScope

#: Longest pause between two passes of the watcher, in seconds.
MAX_TICK = 1.0


class Deadlines:
    """Registers calls and sets their scopes' deadlines once they outlive a tick."""

    __slots__ = ("_now", "_old", "_tick", "_wake", "_young")

    def __init__(self, timeouts: Iterable[float]) -> None:
        self._tick = min(MAX_TICK, min(timeouts, default=4 * MAX_TICK) / 4)
        #: Calls running and registered since the last pass, and those of the
        #: pass before: each scope with its absolute deadline.
        self._young: dict[AttemptScope, float] = {}
        self._old: dict[AttemptScope, float] = {}
        self._wake: anyio.Event | None = None
        self._now: Callable[[], float] = anyio.current_time

    def start(self, scope: AttemptScope, timeout: float) -> None:
        """Register a call starting now under ``scope``; :meth:`end` it however it ends."""
        self._young[scope] = self._now() + timeout
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    def end(self, scope: AttemptScope) -> None:
        """The call under ``scope`` is over: its deadline is not set any more."""
        if self._young.pop(scope, None) is None:
            self._old.pop(scope, None)

    async def watch(self) -> None:
        """Set due deadlines until cancelled (run it beside the worker pool)."""
        self._now = _loop_clock()
        while True:
            if not self._young and not self._old:
                wake = self._wake = anyio.Event()
                await wake.wait()
            await anyio.sleep(self._tick)
            for scope, deadline in self._old.items():
                scope.deadline = deadline
            self._old = self._young
            self._young = {}


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock, the one cancel-scope deadlines are in.

    ``anyio.current_time()`` asks sniffio for the backend on every call; on
    asyncio the loop's own ``time`` is the same clock without the lookup.
    """
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time
