"""Property: whatever the faults, hints, latencies and cancellations, the lifecycle holds.

Random fault scripts for the simulated provider drive tasks through a random
chain; some tasks are cancelled at random moments.  Every task must end in
exactly one terminal state, through legal moves only, within its attempt
budget, on a provider of its chain.  Pure core: asyncio and trio, fake time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import HistoryEntry, Result, Task
from runner._context import TaskExecutionContext
from runner._states import TERMINAL, TRANSITIONS
from runner._task import Status
from runner.config import CooldownConfig, LoggingConfig, RetryConfig, RoleConfig
from runner.metrics import MemorySink
from tests.dispatch_support import FakeTime, Scripts, make_config, open_runner, sim, simulated
from workers.simulated import Fault, Success


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


FAULT_CODES = [
    "rate_limited", "overloaded", "server_error", "timeout", "connection_error",
    "auth_failed", "permission_denied", "bad_request", "not_found",
    "context_length_exceeded", "content_filtered", "quota_exhausted",
    "invalid_response", "unknown",
]  # fmt: skip

latency = st.sampled_from([0.0, 5.0, 250.0])
outcome = st.one_of(
    st.builds(
        Fault,
        code=st.sampled_from(FAULT_CODES),
        retry_after=st.none() | st.sampled_from([0.0, 1.5, 30.0, 120.0]),
        latency_ms=latency,
    ),
    st.builds(Success, latency_ms=latency),
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=4))
    ids = [f"p{i}" for i in range(n)]
    tasks = []
    for t in range(draw(st.integers(min_value=1, max_value=6))):
        plans = {pid: draw(st.lists(outcome, max_size=4)) for pid in ids}
        cancel_after = draw(st.none() | st.integers(min_value=0, max_value=12))
        tasks.append({"id": f"t{t}", "plans": plans, "cancel_after": cancel_after})
    return {
        "ids": ids,
        "max_attempts": draw(st.integers(min_value=1, max_value=3)),
        "max_retry_after": draw(st.sampled_from([0.0, 10.0, 60.0])),
        "cooldown": CooldownConfig(
            failures=draw(st.integers(min_value=1, max_value=4)),
            seconds=draw(st.sampled_from([0.0, 5.0, 40.0])),
        ),
        "concurrency": draw(st.integers(min_value=1, max_value=4)),
        "tasks": tasks,
    }


async def play(scenario: dict[str, Any]) -> None:
    ids = scenario["ids"]
    config = make_config(
        providers=tuple(sim(pid, max_concurrency=2) for pid in ids),
        roles={"r": RoleConfig(provider=ids[0], fallbacks=tuple(ids[1:]))},
        default_provider=ids[-1],
        retry=RetryConfig(
            max_attempts=scenario["max_attempts"],
            initial_delay=0.5,
            max_delay=4.0,
            jitter=0.25,
            max_retry_after=scenario["max_retry_after"],
        ),
        cooldown=scenario["cooldown"],
        concurrency=scenario["concurrency"],
        logging=LoggingConfig(level="warning"),
    )
    scripts = Scripts()
    for spec in scenario["tasks"]:
        for pid, plan in spec["plans"].items():
            scripts.plan(pid, spec["id"], *plan)
    t = FakeTime()
    sink = MemorySink()
    moves: dict[int, list[tuple[Status, Status]]] = defaultdict(list)
    terminal_moves: Counter[int] = Counter()

    def observe(ctx: TaskExecutionContext, entry: HistoryEntry) -> None:
        before = ctx.history[-2].status
        moves[id(ctx)].append((before, entry.status))
        if entry.status in TERMINAL:
            terminal_moves[id(ctx)] += 1

    async def cancel_later(handle: Any, checkpoints: int) -> None:
        for _ in range(checkpoints):
            await anyio.lowlevel.checkpoint()
        await handle.cancel()

    results: list[Result] = []
    async with (
        open_runner(
            config,
            providers=simulated(config, scripts, t.sleep),
            time=t,
            sink=sink,
            observer=observe,
        ) as runner,
        anyio.create_task_group() as tg,
    ):
        handles = []
        for spec in scenario["tasks"]:
            handle = await runner.submit(Task(id=spec["id"], role="r", prompt="x"))
            handles.append(handle)
            if spec["cancel_after"] is not None:
                tg.start_soon(cancel_later, handle, spec["cancel_after"])
        results = [await h for h in handles]

    budget = scenario["max_attempts"]
    chain = set(ids)
    assert all(count == 1 for count in terminal_moves.values())
    for pairs in moves.values():
        assert all(b in TRANSITIONS[a] for a, b in pairs)
    for result in results:
        assert result.status in ("completed", "failed", "cancelled")
        statuses = [h.status for h in result.history]
        assert statuses[0] == "pending"
        assert sum(s in TERMINAL for s in statuses) == 1
        assert statuses[-1] == result.status
        assert result.attempts <= budget * len(ids)
        events = [e for e in sink.events if e.task_id == result.id]
        assert len(events) == result.attempts
        per_provider = Counter(e.provider for e in events)
        assert all(n <= budget for n in per_provider.values())
        assert set(per_provider) <= chain
        if result.provider is not None:
            assert result.provider in chain
        if result.status == "completed":
            assert events[-1].success
            assert result.output is not None
        else:
            assert result.error is not None
        if result.status == "cancelled":
            assert result.error is not None
            assert result.error.code == "cancelled"
    assert len(sink.events) == sum(r.attempts for r in results)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios())
def test_every_task_ends_once_legally_within_budget(
    anyio_backend: str, scenario: dict[str, Any]
) -> None:
    """Random faults and cancellations: one terminal state each, legal moves, budget kept."""
    anyio.run(play, scenario, backend=anyio_backend)
