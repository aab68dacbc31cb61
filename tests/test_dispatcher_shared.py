"""The dispatcher with limits shared elsewhere (the seam cluster mode plugs into).

A fake :class:`~runner._ratelimit.SharedLimits` records every admission, so
these run without a database, on asyncio and trio: each attempt enters once
and leaves once whatever its outcome (also when cancelled mid-call), a
success charges its tokens, every counted outcome goes to the shared
consecutive-failure count (not the runner's own), and a cooldown decided
there steers selection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from runner import Task
from runner.config._model import CooldownConfig, ProviderConfig, RetryConfig, RoleConfig
from tests.dispatch_support import Gate, Scripts, make_config, open_runner, sim, simulated
from workers.simulated import Fault

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FakeAdmission:
    def __init__(self, log: list[tuple[str, str, int]], pid: str) -> None:
        self.log = log
        self.pid = pid

    async def enter(self) -> None:
        self.log.append(("enter", self.pid, 0))
        await anyio.lowlevel.checkpoint()

    def leave(self, tokens: int) -> None:
        self.log.append(("leave", self.pid, tokens))


class FakeLimits:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.outcomes: list[tuple[str, str]] = []
        self.cool: Callable[[str, float], None] | None = None

    def admission(self, provider: ProviderConfig) -> FakeAdmission:
        return FakeAdmission(self.log, provider.id)

    def record_success(self, provider_id: str) -> None:
        self.outcomes.append(("success", provider_id))

    def record_failure(self, provider_id: str) -> None:
        self.outcomes.append(("failure", provider_id))

    def bind(self, cool: Callable[[str, float], None]) -> None:
        self.cool = cool


CONFIG = make_config(
    providers=(sim("p"), sim("q")),
    roles={"coder": RoleConfig(provider="p", fallbacks=("q",))},
    default_provider="q",
    retry=RetryConfig(max_attempts=1, initial_delay=0, jitter=0),
    cooldown=CooldownConfig(failures=1, seconds=60),
)


async def test_every_attempt_enters_and_leaves_once() -> None:
    """A failure then a fallback success: two admissions, the success's tokens charged."""
    limits = FakeLimits()
    scripts = Scripts()
    scripts.plan("p", "t1", Fault(code="server_error"))
    providers = simulated(CONFIG, scripts)
    async with open_runner(CONFIG, providers=providers, limits=limits) as runner:
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert result.usage is not None
    assert limits.log == [
        ("enter", "p", 0),
        ("leave", "p", 0),
        ("enter", "q", 0),
        ("leave", "q", result.usage.total_tokens),
    ]
    # Each outcome goes to the shared count, which decides on cooldowns: the
    # runner's own registry starts none (cooldown.failures is 1 here).
    assert limits.outcomes == [("failure", "p"), ("success", "q")]
    assert runner._registry is not None
    assert runner._registry.statistics()["p"].cooling_until is None


async def test_a_cancelled_call_still_leaves() -> None:
    """Cancelled mid-call, the attempt gives its admission back."""
    limits = FakeLimits()
    gates = {pid: Gate(p, Counter(), Counter()) for pid, p in simulated(CONFIG).items()}
    gates["p"].hold = anyio.Event()
    async with open_runner(CONFIG, providers=gates, limits=limits) as runner:
        handle = await runner.submit(Task(id="t1", role="coder", prompt="x"))
        while gates["p"].started == 0:
            await anyio.lowlevel.checkpoint()
        await handle.cancel()
    assert (await handle).status == "cancelled"
    assert limits.log == [("enter", "p", 0), ("leave", "p", 0)]


async def test_a_cooldown_from_elsewhere_steers_selection() -> None:
    """Told that p cools down, the runner goes straight to q without calling p."""
    limits = FakeLimits()
    scripts = Scripts()
    async with open_runner(CONFIG, providers=simulated(CONFIG, scripts), limits=limits) as runner:
        assert limits.cool is not None
        limits.cool("p", 30.0)
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.provider == "q"
    assert [pid for pid, _ in scripts.requests] == ["q"]
