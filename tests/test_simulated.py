"""The simulated provider's latency paths: fixed, jittered and scripted."""

from __future__ import annotations

import pytest

from runner import Message
from runner.config import LatencySpec, ProviderConfig
from workers._base import CompletionRequest
from workers._parameters import Parameters
from workers.simulated import SimulatedProvider, Success


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
