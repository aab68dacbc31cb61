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
            call = deadlines.start(scope, 0.2)
            await anyio.sleep_forever()
        call[0] = None
        tg.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert scope.deadline == call[1]


async def test_a_short_call_never_touches_the_timer() -> None:
    """A call that ends within a tick leaves its scope without a deadline."""
    deadlines = Deadlines([0.2])
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadlines.watch)
        with anyio.CancelScope() as scope:
            call = deadlines.start(scope, 0.2)
            await anyio.lowlevel.checkpoint()
        call[0] = None
        await anyio.sleep(0.15)  # three ticks: every pass has seen the entry
        tg.cancel_scope.cancel()
    assert scope.deadline == math.inf
    assert not scope.cancelled_caught


def test_the_tick_is_a_quarter_of_the_shortest_timeout_at_most_a_second() -> None:
    """Deadlines are set at most half a timeout after the call starts, however long."""
    assert Deadlines([60.0, 0.4])._tick == pytest.approx(0.1)
    assert Deadlines([600.0])._tick == MAX_TICK
    assert Deadlines([])._tick == MAX_TICK
