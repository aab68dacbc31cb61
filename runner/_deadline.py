"""Attempt deadlines, set on the attempt's own cancel scope, only for calls that last.

The dispatcher owns each attempt's deadline: the attempt's one cancel scope
gets ``deadline = call start + provider timeout``.  Setting a scope's deadline
costs a timer in the event loop's heap, one per attempt, which the
benchmarks measured at about an eighth of the dispatcher's whole cost per
task (27,000 of 199,000 instructions, zero-latency provider), almost all of
it for calls that answer long before their deadline.

:class:`Deadlines` therefore sets the deadline late but exactly: a call is
registered when it starts (an append to a list), and a watcher task sets the
scope's deadline, the one computed at the start, on every call still running
one to two ticks later.  A tick is a quarter of the shortest provider timeout
(at most one second), so a deadline is always set well before it falls due
and fires on time; calls that end within a tick never touch the timer heap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import sniffio

from runner._scope import AttemptScope

#: Longest pause between two passes of the watcher, in seconds.
MAX_TICK = 1.0

#: One registered call: ``[scope, deadline]``; the caller sets ``[0]`` to
#: ``None`` when the call ends.  A plain list, since one is made per attempt.
Entry = list[Any]


class Deadlines:
    """Registers calls and sets their scopes' deadlines once they outlive a tick."""

    __slots__ = ("_now", "_old", "_tick", "_wake", "_young")

    def __init__(self, timeouts: Iterable[float]) -> None:
        self._tick = min(MAX_TICK, min(timeouts, default=4 * MAX_TICK) / 4)
        #: Calls registered since the last pass, and those of the pass before:
        #: each entry is [scope or None once the call ended, absolute deadline].
        self._young: list[Entry] = []
        self._old: list[Entry] = []
        self._wake: anyio.Event | None = None
        self._now: Callable[[], float] = anyio.current_time

    def start(self, scope: AttemptScope, timeout: float) -> Entry:
        """Register a call starting now under ``scope``; set ``entry[0] = None`` when it ends."""
        entry: Entry = [scope, self._now() + timeout]
        self._young.append(entry)
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        return entry

    async def watch(self) -> None:
        """Set due deadlines until cancelled (run it beside the worker pool)."""
        self._now = _loop_clock()
        while True:
            if not self._young and not self._old:
                wake = self._wake = anyio.Event()
                await wake.wait()
            await anyio.sleep(self._tick)
            for entry in self._old:
                scope = entry[0]
                if scope is not None:
                    scope.deadline = entry[1]
            self._old = self._young
            self._young = []


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock, the one cancel-scope deadlines are in.

    ``anyio.current_time()`` asks sniffio for the backend on every call; on
    asyncio the loop's own ``time`` is the same clock without the lookup.
    """
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time
