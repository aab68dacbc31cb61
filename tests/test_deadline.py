"""Attempt deadlines: set on the attempt's scope only when the call outlives a tick.

Pure core: asyncio and trio, real (short) time.
"""

from __future__ import annotations

import math

import anyio
import pytest

from runner._deadline import MAX_TICK, Deadlines

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_long_call_is_cut_at_exactly_its_deadline() -> None:
    """A call that outlives a tick gets the deadline computed when it started, and is cut."""
    deadlines = Deadlines([0.2])
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.watch)
        with anyio.CancelScope() as scope:
            deadlines.start(scope, 0.2)
            due = deadlines._young[scope]
            await anyio.sleep_forever()
        deadlines.end(scope)
        tg.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert scope.deadline == due


async def test_a_short_call_never_touches_the_timer() -> None:
    """A call that ends within a tick leaves its scope without a deadline."""
    deadlines = Deadlines([0.2])
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.watch)
        with anyio.CancelScope() as scope:
            deadlines.start(scope, 0.2)
            await anyio.lowlevel.checkpoint()
        deadlines.end(scope)
        await anyio.sleep(0.15)  # three ticks: every pass has seen the entry
        tg.cancel_scope.cancel()
    assert scope.deadline == math.inf
    assert not scope.cancelled_caught


async def test_an_ended_call_is_not_kept() -> None:
    """Ending a call drops its scope at once, whichever pass registered it."""
    deadlines = Deadlines([0.2])
    first, second = anyio.CancelScope(), anyio.CancelScope()
    deadlines.start(first, 0.2)
    # What a watcher's pass does with the calls of the pass before.
    deadlines._old, deadlines._young = deadlines._young, {}
    deadlines.start(second, 0.2)
    assert (list(deadlines._old), list(deadlines._young)) == ([first], [second])
    deadlines.end(first)
    deadlines.end(second)
    assert (deadlines._young, deadlines._old) == ({}, {})
    deadlines.end(second)  # ending twice is harmless
    assert first.deadline == second.deadline == math.inf


def test_the_tick_is_a_quarter_of_the_shortest_timeout_at_most_a_second() -> None:
    """Deadlines are set at most half a timeout after the call starts, however long."""
    assert Deadlines([60.0, 0.4])._tick == pytest.approx(0.1)
    assert Deadlines([600.0])._tick == MAX_TICK
    assert Deadlines([])._tick == MAX_TICK
