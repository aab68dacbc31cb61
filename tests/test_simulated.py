"""The simulated provider's latency paths: fixed, jittered and scripted."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from runner import Message
from runner.config import LatencySpec, ProviderConfig
from workers._base import CompletionRequest
from workers._parameters import Parameters
from workers.simulated import SharedWakeups, SimulatedProvider, Success


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Sleeps:
    """Records each requested wait instead of waiting."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)


def request(task_id: str, attempt: int = 1) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content="hello"),),
        system=None,
        parameters=Parameters(),
        task_id=task_id,
        attempt=attempt,
    )


def provider(sleeps: Sleeps, **kw: object) -> SimulatedProvider:
    config = ProviderConfig(id="s", type="simulated", model="m", **kw)  # type: ignore[arg-type]
    return SimulatedProvider(config, sleep=sleeps.sleep)


@pytest.mark.anyio
async def test_fixed_latency_waits_exactly_that_long_every_attempt() -> None:
    """Without jitter or faults each attempt waits the configured latency, no more, no less."""
    sleeps = Sleeps()
    sim = provider(sleeps, latency_ms=LatencySpec(mean=100.0))
    answers = [await sim.complete(request(f"t{i}")) for i in range(3)]
    assert sleeps.seconds == [0.1, 0.1, 0.1]
    assert [a.response_id for a in answers] == ["sim-t0-1", "sim-t1-1", "sim-t2-1"]
    assert answers[0].text == "[simulated m] reply to: hello"


@pytest.mark.anyio
async def test_zero_latency_does_not_sleep() -> None:
    """With no latency configured the provider answers without calling sleep."""
    sleeps = Sleeps()
    answer = await provider(sleeps).complete(request("t"))
    assert sleeps.seconds == []
    assert answer.finish_reason == "stop"


@pytest.mark.anyio
async def test_jittered_latency_is_deterministic_per_task_and_attempt() -> None:
    """With jitter, the same seed, task and attempt always wait the same time, within bounds."""
    first, second = Sleeps(), Sleeps()
    spec = LatencySpec(mean=100.0, jitter=20.0)
    for sleeps in (first, second):
        sim = provider(sleeps, latency_ms=spec, seed=7)
        for i in range(5):
            await sim.complete(request(f"t{i}", attempt=2))
    assert first.seconds == second.seconds
    assert all(0.08 <= s <= 0.12 for s in first.seconds)
    assert len(set(first.seconds)) > 1


@pytest.mark.anyio
async def test_script_overrides_fixed_latency() -> None:
    """A script's latency wins over the configured fixed latency."""
    sleeps = Sleeps()
    config = ProviderConfig(id="s", type="simulated", model="m", latency_ms=LatencySpec(mean=100.0))
    sim = SimulatedProvider(config, sleep=sleeps.sleep, script=lambda _: Success(latency_ms=250))
    await sim.complete(request("t"))
    assert sleeps.seconds == [0.25]


@pytest.mark.anyio
async def test_the_default_sleep_waits_the_latency_on_both_backends(anyio_backend: str) -> None:
    """Without an injected sleep each call takes its latency; on asyncio the calls share timers."""
    config = ProviderConfig(id="s", type="simulated", model="m", latency_ms=LatencySpec(mean=30.0))
    sim = SimulatedProvider(config)
    took: dict[str, float] = {}
    starts: list[float] = []

    async def one(task_id: str) -> None:
        start = anyio.current_time()
        starts.append(start)
        answer = await sim.complete(request(task_id))
        took[task_id] = anyio.current_time() - start
        assert answer.response_id == f"sim-{task_id}-1"

    timers = 0
    if anyio_backend == "asyncio":
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counting(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(when, callback, *args)

        loop.call_at = counting  # type: ignore[method-assign, assignment]
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, f"t{i}")
    assert len(took) == 50
    if anyio_backend == "asyncio":
        # One per millisecond the 50 calls end in: as many as the milliseconds
        # their starts spread over (a loaded machine spreads them), never 50.
        assert 1 <= timers <= _milliseconds(starts) + 1
    # At least the latency; at most a millisecond more, plus scheduling slack.
    assert min(took.values()) >= 0.030 - 1e-6
    assert max(took.values()) < 0.030 + 0.5


def _milliseconds(times: list[float]) -> int:
    """How many loop-clock milliseconds ``times`` touch, first to last."""
    return int(max(times) * 1000) - int(min(times) * 1000) + 1


def test_calls_ending_in_one_millisecond_share_one_timer() -> None:
    """200 sleeps begun together set one or two loop timers, and all wake, in order."""

    starts: list[float] = []

    async def main() -> tuple[int, list[int]]:
        loop = asyncio.get_running_loop()
        timers = 0
        call_at = loop.call_at

        def counting(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(when, callback, *args)

        loop.call_at = counting  # type: ignore[method-assign, assignment]
        wakeups = SharedWakeups()
        woke: list[int] = []

        async def sleeper(i: int) -> None:
            starts.append(loop.time())
            await wakeups.sleep(loop, 0.02)
            woke.append(i)

        tasks = [asyncio.ensure_future(sleeper(i)) for i in range(200)]
        await asyncio.gather(*tasks)
        return timers, woke

    timers, woke = asyncio.run(main())
    # Begun in one loop turn: one or two milliseconds on a quiet machine, a
    # few more on a loaded one, never one timer per sleep.
    assert 1 <= timers <= _milliseconds(starts) + 1 < 200
    assert woke == list(range(200))


def test_a_cancelled_sleeper_leaves_the_others_sleeping_to_the_end() -> None:
    """Cancelling one shared sleep cancels only it; a later event loop gets the timers next."""
    wakeups = SharedWakeups()

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ends: list[str] = []

        async def sleeper(name: str) -> None:
            await wakeups.sleep(loop, 0.05)
            ends.append(name)
            assert loop.time() - start >= 0.05

        a = asyncio.ensure_future(sleeper("a"))
        b = asyncio.ensure_future(sleeper("b"))
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.gather(b)
        with pytest.raises(asyncio.CancelledError):
            await a
        return ends

    assert asyncio.run(main()) == ["b"]
    assert asyncio.run(main()) == ["b"]  # a new loop, once the first is closed
