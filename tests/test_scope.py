"""The attempt scope on asyncio: cancels its own attempt, never hides anyone else's cancellation.

The dispatcher tests run every cancellation and timeout path on both
backends (trio keeps anyio's scope); these pin :class:`AsyncioScope` itself.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from runner._scope import AsyncioScope, scope_factory

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_cancel_from_another_task_ends_the_scope_quietly() -> None:
    """cancel() while the task waits inside: the wait stops, the scope swallows it, code goes on."""
    scope = AsyncioScope()
    reached: list[str] = []

    async def attempt() -> None:
        with scope:
            await asyncio.sleep(10)
            reached.append("not here")
        reached.append("after")
        await asyncio.sleep(0)  # no cancellation left pending on the task
        reached.append("still running")

    task = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.01)
    scope.cancel()
    await asyncio.wait_for(task, 5)
    assert reached == ["after", "still running"]
    assert scope.cancel_called
    assert task.cancelling() == 0


async def test_a_deadline_set_while_active_cancels_on_time() -> None:
    """deadline set during the wait: the scope ends at that loop time, not before."""
    loop = asyncio.get_running_loop()
    scope = AsyncioScope()
    start = loop.time()
    with scope:
        scope.deadline = start + 0.05
        await asyncio.sleep(10)
    assert loop.time() - start >= 0.05
    assert scope.cancel_called


async def test_a_deadline_already_past_cancels_at_the_next_wait() -> None:
    """A deadline in the past cancels at once; one left behind with its scope never fires."""
    loop = asyncio.get_running_loop()
    with AsyncioScope() as scope:
        scope.deadline = loop.time() - 1
        await asyncio.sleep(10)
    done = AsyncioScope()
    with done:
        done.deadline = loop.time() + 0.01
    await asyncio.sleep(0.03)
    assert not done.cancel_called


async def test_an_enclosing_anyio_cancellation_passes_through() -> None:
    """An anyio scope cancelled around it (a shutdown): the CancelledError is not swallowed."""
    after_inner: list[bool] = []
    with anyio.CancelScope() as outer:

        async def cancel_soon() -> None:
            await asyncio.sleep(0.01)
            outer.cancel()

        helper = asyncio.ensure_future(cancel_soon())
        with AsyncioScope():
            await asyncio.sleep(10)
        after_inner.append(True)
    await helper
    assert outer.cancelled_caught
    assert after_inner == []


async def test_both_cancellations_at_once_still_reach_the_outer_scope() -> None:
    """The attempt's cancel and an enclosing one in the same loop turn: the outer one still lands.

    asyncio folds the two into one CancelledError, which the attempt's scope
    takes as its own; anyio re-delivers its cancellation at the task's next
    wait, so it is delayed to there, never lost.
    """
    reached: list[str] = []
    inner = AsyncioScope()
    with anyio.CancelScope() as outer:

        async def cancel_both() -> None:
            await asyncio.sleep(0.01)
            inner.cancel()
            outer.cancel()

        helper = asyncio.ensure_future(cancel_both())
        with inner:
            await asyncio.sleep(10)
        reached.append("after the attempt")
        await asyncio.sleep(10)
        reached.append("not here")
    await helper
    assert outer.cancelled_caught
    assert reached == ["after the attempt"]


async def test_a_cancel_from_inside_lands_at_the_next_wait_and_never_leaks() -> None:
    """cancel() by the task itself: the next wait inside is cancelled; left first, nothing pends."""
    reached: list[str] = []
    with AsyncioScope() as scope:
        scope.cancel()
        reached.append("same step")
        await asyncio.sleep(10)
        reached.append("not here")
    with AsyncioScope() as quiet:
        quiet.cancel()  # the scope is left before any wait
    await asyncio.sleep(0.01)  # must not raise
    reached.append("after")
    assert reached == ["same step", "after"]


async def test_a_result_already_handed_over_is_not_lost() -> None:
    """Cancelled right after its future got a result: the task gets it, the next wait is cut."""
    scope = AsyncioScope()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    got: list[int] = []

    async def attempt() -> None:
        with scope:
            got.append(await future)
            await asyncio.sleep(10)
            got.append(-1)

    task = asyncio.ensure_future(attempt())
    await asyncio.sleep(0.01)
    future.set_result(7)
    scope.cancel()
    await asyncio.wait_for(task, 5)
    assert got == [7]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_each_backend_gets_its_scope_class(backend: str) -> None:
    """asyncio gets the light scope; trio keeps anyio's own CancelScope."""

    async def which() -> type:
        return scope_factory()  # type: ignore[return-value]

    cls = anyio.run(which, backend=backend)
    if backend == "asyncio":
        assert cls is AsyncioScope
    else:
        assert issubclass(cls, anyio.CancelScope)
