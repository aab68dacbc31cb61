"""The dispatcher: retries, backoff, retry-after, fallback, cooldown, timeouts, limits.

Pure core: runs on asyncio and trio, with fake time (no real waiting).
"""

from __future__ import annotations

import io
import itertools
from collections import Counter
from typing import Any

import anyio
import pytest

from runner import ProviderError, Result, Task
from runner._ratelimit import RateLimiter
from runner._states import TRANSITIONS
from runner.config import CooldownConfig, RateLimit, RetryConfig, RoleConfig
from runner.metrics import MemorySink
from runner.metrics._events import MetricEvent
from tests.dispatch_support import (
    FakeTime,
    Gate,
    Scripts,
    log_lines,
    make_config,
    open_runner,
    sim,
    simulated,
)
from workers import CompletionRequest, CompletionResponse
from workers.simulated import Fault, Success

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def running_providers(result: Result) -> list[str | None]:
    return [h.provider for h in result.history if h.status == "running"]


def assert_legal_history(result: Result) -> None:
    statuses = [h.status for h in result.history]
    assert statuses[0] == "pending"
    for a, b in itertools.pairwise(statuses):
        assert b in TRANSITIONS[a], f"{a} -> {b}"


async def run_one(
    config: Any, scripts: Scripts, task: Task, **kw: Any
) -> tuple[Result, FakeTime, MemorySink, io.StringIO]:
    t = FakeTime()
    sink = MemorySink()
    log = io.StringIO()
    async with open_runner(
        config, providers=simulated(config, scripts, t.sleep), time=t, sink=sink, log=log, **kw
    ) as runner:
        result = await runner.run(task)
    return result, t, sink, log


async def test_success_fills_every_result_field() -> None:
    """A first-try success names provider, model, usage, cost, timings and its history."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Success(latency_ms=250))
    result, _, sink, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="hi"))
    assert result.status == "completed"
    assert (result.provider, result.model, result.attempts) == ("a", "model-a", 1)
    assert result.fallback_used is False
    assert result.output is not None
    assert result.output.endswith("reply to: hi")
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.total_tokens > 0
    expected_cost = (result.usage.input_tokens * 1.0 + result.usage.output_tokens * 2.0) / 1e6
    assert result.cost_usd == pytest.approx(expected_cost)
    assert result.latency_ms == pytest.approx(250.0)
    assert result.queued_ms == 0.0
    assert result.error is None
    assert [(h.status, h.provider) for h in result.history] == [
        ("pending", None),
        ("running", "a"),
        ("completed", "a"),
    ]
    (event,) = sink.events
    assert (event.task_id, event.provider, event.role, event.model) == (
        "t1",
        "a",
        "coder",
        "model-a",
    )
    assert (event.attempt, event.success, event.error_code) == (1, True, None)
    assert event.input_tokens == result.usage.input_tokens
    assert event.cost_usd == pytest.approx(expected_cost)
    assert event.latency_ms == pytest.approx(250.0)


async def test_retry_after_is_honoured() -> None:
    """A retry-after hint within max_retry_after is the exact wait before the retry."""
    config = make_config()
    scripts = Scripts()
    hint = Fault(code="rate_limited", retry_after=7.0)
    scripts.plan("a", "t1", hint, Fault(code="overloaded", retry_after=2.5), Success())
    result, t, sink, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert (result.provider, result.attempts, result.fallback_used) == ("a", 3, False)
    assert t.sleeps == [7.0, 2.5]
    assert [e.error_code for e in sink.events] == ["rate_limited", "overloaded", None]
    assert [h.status for h in result.history] == [
        "pending", "running", "retrying", "running", "retrying", "running", "completed",
    ]  # fmt: skip


async def test_backoff_is_exponential_and_capped() -> None:
    """Without a hint the waits double from initial_delay and stop at max_delay."""
    config = make_config(
        retry=RetryConfig(max_attempts=5, initial_delay=0.5, max_delay=1.5, jitter=0)
    )
    scripts = Scripts()
    scripts.plan("a", "t1", *[Fault(code="server_error")] * 4, Success())
    result, t, _, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="x"))
    assert (result.status, result.attempts) == ("completed", 5)
    assert t.sleeps == [0.5, 1.0, 1.5, 1.5]


async def test_backoff_jitter_stays_within_bounds() -> None:
    """Jitter adds between 0 and `jitter` seconds to each backoff."""
    config = make_config(
        retry=RetryConfig(max_attempts=3, initial_delay=1.0, max_delay=100, jitter=0.5)
    )
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="timeout"), Fault(code="connection_error"), Success())
    result, t, _, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert 1.0 <= t.sleeps[0] <= 1.5
    assert 2.0 <= t.sleeps[1] <= 2.5


async def test_too_long_retry_after_falls_back_at_once() -> None:
    """A hint longer than max_retry_after moves to the next provider without waiting."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="rate_limited", retry_after=61.0))
    result, t, _, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert t.sleeps == []
    assert running_providers(result) == ["a", "b"]
    assert (result.provider, result.fallback_used, result.attempts) == ("b", True, 2)


async def test_fallback_order_primary_fallbacks_default_in_history_and_log() -> None:
    """Non-retryable failures walk primary -> fallbacks -> default, in the history and the log."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="auth_failed"))
    scripts.plan("b", "t1", Fault(code="not_found"))
    scripts.plan("c", "t1", Fault(code="permission_denied"))
    result, t, sink, log = await run_one(
        config, scripts, Task(id="t1", role="coder", prompt="secret prompt text")
    )
    assert result.status == "completed"
    assert running_providers(result) == ["a", "b", "c", "d"]
    assert [h.error_code for h in result.history if h.status == "retrying"] == [
        "auth_failed", "not_found", "permission_denied",
    ]  # fmt: skip
    assert [e.provider for e in sink.events] == ["a", "b", "c", "d"]
    assert t.sleeps == []
    lines = log_lines(log)
    assert [ln["provider"] for ln in lines if ln["status"] == "running"] == ["a", "b", "c", "d"]
    assert lines[-1] == {
        "event": "task",
        "task_id": "t1",
        "role": "coder",
        "provider": "d",
        "attempt": 4,
        "status": "completed",
        "latency_ms": 0.0,
        "level": "info",
        "timestamp": lines[-1]["timestamp"],
    }
    assert {ln["error"] for ln in lines if "error" in ln} == {
        "auth_failed", "not_found", "permission_denied",
    }  # fmt: skip
    assert "secret prompt text" not in log.getvalue()


async def test_exhausted_attempts_fall_back_then_fail_with_last_error() -> None:
    """Each provider gets max_attempts; when the whole chain is spent the task fails."""
    config = make_config()
    scripts = Scripts()
    for pid in ("b", "d"):
        scripts.plan(pid, "t1", *[Fault(code="server_error")] * 3)
    result, t, sink, _ = await run_one(config, scripts, Task(id="t1", role="reviewer", prompt="x"))
    assert result.status == "failed"
    assert result.attempts == 6
    assert running_providers(result) == ["b", "b", "b", "d", "d", "d"]
    assert result.error is not None
    assert (result.error.code, result.error.provider, result.error.retryable) == (
        "server_error", "d", True,
    )  # fmt: skip
    assert result.error.message == "simulated server_error"
    assert result.provider == "d"
    assert (result.output, result.usage, result.cost_usd) == (None, None, None)
    assert t.sleeps == [0.5, 1.0, 0.5, 1.0]
    assert len(sink.events) == 6
    assert not any(e.success for e in sink.events)
    assert result.history[-1].status == "failed"
    assert_legal_history(result)


async def test_waits_for_earliest_recovery_when_whole_chain_cools() -> None:
    """With every provider cooling down a task waits for the first recovery, then runs."""
    config = make_config(cooldown=CooldownConfig(failures=1, seconds=30))
    scripts = Scripts()
    scripts.plan("b", "t1", Fault(code="auth_failed"))
    scripts.plan("d", "t1", Fault(code="quota_exhausted"))
    t = FakeTime()
    async with open_runner(config, providers=simulated(config, scripts, t.sleep), time=t) as runner:
        first = await runner.run(Task(id="t1", role="reviewer", prompt="x"))
        assert first.status == "failed"
        second = await runner.run(Task(id="t2", role="reviewer", prompt="x"))
    assert second.status == "completed"
    assert t.sleeps == [30.0]
    assert second.provider == "b"


async def test_task_specific_errors_do_not_cool_a_provider() -> None:
    """bad_request and friends fall back but do not count toward the provider's cooldown."""
    config = make_config(cooldown=CooldownConfig(failures=1, seconds=30))
    scripts = Scripts()
    scripts.plan("b", "t1", Fault(code="context_length_exceeded"))
    t = FakeTime()
    async with open_runner(config, providers=simulated(config, scripts, t.sleep), time=t) as runner:
        first = await runner.run(Task(id="t1", role="reviewer", prompt="x"))
        second = await runner.run(Task(id="t2", role="reviewer", prompt="x"))
    assert (first.provider, second.provider) == ("d", "b")
    assert t.sleeps == []


class Hanging:
    """An adapter whose call never returns (for the per-attempt timeout)."""

    id = "a"
    type = "simulated"
    model = "model-a"

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def check_credentials(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Buggy(Hanging):
    """An adapter with a bug: it raises something that is not a ProviderError."""

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise ValueError("key sk-live-123 in a bug message")


async def test_attempt_timeout_becomes_retryable_timeout_error() -> None:
    """An attempt past provider.timeout fails with `timeout`, is retried, then falls back."""
    config = make_config(
        providers=(sim("a", timeout=0.01), sim("b"), sim("c"), sim("d")),
        retry=RetryConfig(max_attempts=2, initial_delay=0.25, jitter=0),
    )
    providers = simulated(config)
    providers["a"] = Hanging()
    t = FakeTime()
    sink = MemorySink()
    async with open_runner(config, providers=providers, time=t, sink=sink) as runner:
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert running_providers(result) == ["a", "a", "b"]
    assert [e.error_code for e in sink.events] == ["timeout", "timeout", None]
    assert t.sleeps == [0.25]


async def test_timeout_is_reported_once_in_the_documented_words() -> None:
    """A custom adapter that never answers fails `timeout: no response within N s`."""
    config = make_config(
        providers=(sim("a", timeout=0.01), sim("b"), sim("c"), sim("d")),
        roles={"coder": RoleConfig(provider="a")},
        default_provider="a",
        retry=RetryConfig(max_attempts=1),
    )
    providers = simulated(config)
    providers["a"] = Hanging()
    sink = MemorySink()
    async with open_runner(config, providers=providers, sink=sink) as runner:
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.code, result.error.message) == ("timeout", "no response within 0.01 s")
    assert [e.error_code for e in sink.events] == ["timeout"]


async def test_adapter_bug_is_a_failed_attempt_not_a_crash() -> None:
    """An adapter raising a non-ProviderError yields an `unknown` attempt and the task goes on."""
    config = make_config()
    providers = simulated(config)
    providers["a"] = Buggy()
    sink = MemorySink()
    log = io.StringIO()
    async with open_runner(config, providers=providers, sink=sink, log=log) as runner:
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert running_providers(result) == ["a", "b"]
    assert [e.error_code for e in sink.events] == ["unknown", None]
    assert "sk-live-123" not in log.getvalue()
    assert any(ln.get("event") == "provider_crashed" for ln in log_lines(log))


async def test_every_attempt_emits_one_event_matching_the_history() -> None:
    """One metric event per attempt, in attempt order, matching the running moves."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="server_error"), Fault(code="bad_request"))
    scripts.plan("b", "t1", Fault(code="overloaded", retry_after=1.0), Success())
    result, _, sink, _ = await run_one(config, scripts, Task(id="t1", role="coder", prompt="x"))
    assert result.attempts == len(sink.events) == 4
    assert [e.attempt for e in sink.events] == [1, 2, 3, 4]
    assert [e.provider for e in sink.events] == running_providers(result)
    assert len({e.event_id for e in sink.events}) == 4
    assert [e.success for e in sink.events] == [False, False, False, True]


class _NowaitSink(MemorySink):
    """Takes every other event through send_nowait, refusing the rest (as a full stream would)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def send_nowait(self, event: MetricEvent) -> bool:
        if self.paths.count("nowait") > self.paths.count("refused"):
            self.paths.append("refused")
            return False
        self.paths.append("nowait")
        self.events.append(event)
        return True

    async def send(self, event: MetricEvent) -> None:
        self.paths.append("send")
        await super().send(event)


async def test_events_go_through_send_nowait_or_send_when_refused() -> None:
    """A sink's send_nowait takes events when it can; refused ones are awaited through send."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="server_error"), Fault(code="bad_request"))
    scripts.plan("b", "t1", Fault(code="overloaded", retry_after=1.0), Success())
    sink = _NowaitSink()
    t = FakeTime()
    async with open_runner(
        config, providers=simulated(config, scripts, t.sleep), time=t, sink=sink
    ) as runner:
        result = await runner.run(Task(id="t1", role="coder", prompt="x"))
    assert result.status == "completed"
    assert [e.attempt for e in sink.events] == [1, 2, 3, 4]
    assert [e.success for e in sink.events] == [False, False, False, True]
    assert sink.paths == ["nowait", "refused", "send", "nowait", "refused", "send"]


async def test_task_parameters_override_role_and_provider_parameters() -> None:
    """The task's own parameters go on top of the merged route parameters."""
    from workers._parameters import Parameters

    config = make_config(
        defaults=Parameters(temperature=0.2, max_tokens=100),
        roles={"coder": RoleConfig(provider="a", parameters=Parameters(top_p=0.5))},
    )
    scripts = Scripts()
    result, _, _, _ = await run_one(
        config,
        scripts,
        Task(id="t1", role="coder", prompt="x", parameters=Parameters(temperature=0.9)),
    )
    assert result.status == "completed"
    ((_, request),) = scripts.requests
    assert request.parameters == Parameters(temperature=0.9, top_p=0.5, max_tokens=100)


async def test_concurrency_limits_are_never_exceeded() -> None:
    """In-flight calls never pass a provider's max_concurrency nor the global concurrency."""
    config = make_config(
        providers=(
            sim("a", max_concurrency=2),
            sim("b", max_concurrency=3),
            sim("c", max_concurrency=1),
            sim("d", max_concurrency=4),
        ),
        concurrency=6,
    )
    counts: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    providers = {pid: Gate(p, counts, peaks) for pid, p in simulated(config).items()}
    roles = ["coder", "reviewer", "clarifier", "planner"]
    tasks = [Task(id=f"t{i}", role=roles[i % 4], prompt="x") for i in range(80)]
    async with open_runner(config, providers=providers) as runner:
        results = [r async for r in runner.run_many(tasks)]
    assert len(results) == 80
    assert all(r.status == "completed" for r in results)
    assert peaks["a"] <= 2
    assert peaks["b"] <= 3
    assert peaks["c"] <= 1
    assert peaks["d"] <= 4
    assert 2 <= peaks["*"] <= 6


async def test_provider_limit_binds_below_the_global_limit() -> None:
    """With more workers than a provider allows, its calls queue at max_concurrency."""
    config = make_config(providers=(sim("a", max_concurrency=2), sim("b"), sim("c"), sim("d")))
    counts: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    providers = {pid: Gate(p, counts, peaks) for pid, p in simulated(config).items()}
    tasks = (Task(id=f"t{i}", role="coder", prompt="x") for i in range(30))
    async with open_runner(config, providers=providers) as runner:
        results = [r async for r in runner.run_many(tasks)]
    assert {r.provider for r in results} == {"a"}
    assert peaks["a"] == 2


async def test_provider_limit_at_the_global_limit_lets_the_global_limit_bind() -> None:
    """A provider allowing as many calls as the global limit (or more) runs exactly that many."""
    config = make_config(
        providers=(sim("a", max_concurrency=4), sim("b", max_concurrency=9), sim("c"), sim("d")),
        concurrency=4,
    )
    counts: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    providers = {pid: Gate(p, counts, peaks) for pid, p in simulated(config).items()}
    tasks = [Task(id=f"t{i}", role=("coder", "reviewer")[i % 2], prompt="x") for i in range(40)]
    async with open_runner(config, providers=providers) as runner:
        results = [r async for r in runner.run_many(tasks)]
    assert [r.status for r in results] == ["completed"] * 40
    assert {r.provider for r in results} == {"a", "b"}
    assert peaks["*"] == 4
    assert peaks["a"] <= 4
    assert peaks["b"] <= 4


async def test_ten_concurrent_tasks_each_use_their_roles_provider() -> None:
    """Ten tasks of different roles in flight together each run on their role's primary."""
    config = make_config()
    counts: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    gates = {pid: Gate(p, counts, peaks) for pid, p in simulated(config).items()}
    hold = anyio.Event()
    for g in gates.values():
        g.hold = hold
    expected = {"coder": "a", "reviewer": "b", "clarifier": "c", "planner": "d", "other": "d"}
    roles = list(expected) * 2
    async with open_runner(config, providers=gates, concurrency=10) as runner:
        handles = [
            await runner.submit(Task(id=f"t{i}", role=role, prompt="x"))
            for i, role in enumerate(roles)
        ]
        while sum(g.started for g in gates.values()) < 10:
            await anyio.lowlevel.checkpoint()
        assert peaks["*"] == 10
        hold.set()
        results = [await h for h in handles]
    assert [r.provider for r in results] == [expected[role] for role in roles]
    assert [r.role for r in results] == roles


async def test_rate_limit_spaces_requests() -> None:
    """requests_per_minute makes later attempts wait their turn (checked on fake time)."""
    config = make_config(
        providers=(
            sim("a", rate_limit=RateLimit(requests_per_minute=1)),
            sim("b"),
            sim("c"),
            sim("d"),
        ),
        concurrency=1,
    )
    t = FakeTime()
    async with open_runner(config, time=t) as runner:
        for i in range(3):
            assert (
                await runner.run(Task(id=f"t{i}", role="coder", prompt="x"))
            ).status == "completed"
    assert t.sleeps == [60.0, 60.0]


async def test_token_budget_holds_back_calls_after_a_burst() -> None:
    """tokens_per_minute charges actual usage; the debt delays the next call."""
    t = FakeTime()
    limiter = RateLimiter(RateLimit(tokens_per_minute=120), clock=t.clock, sleep=t.sleep)
    await limiter.acquire()
    limiter.charge(180)  # 60 tokens of debt at 2 tokens/s
    await limiter.acquire()
    assert t.sleeps == [30.0]
    await limiter.acquire()
    assert t.sleeps == [30.0]


async def test_cancelling_a_queued_task() -> None:
    """A task cancelled while queued ends cancelled without any attempt."""
    config = make_config(concurrency=1)
    counts: Counter[str] = Counter()
    gates = {pid: Gate(p, counts, Counter()) for pid, p in simulated(config).items()}
    hold = anyio.Event()
    gates["a"].hold = hold
    sink = MemorySink()
    async with open_runner(config, providers=gates, sink=sink) as runner:
        blocker = await runner.submit(Task(id="busy", role="coder", prompt="x"))
        queued = await runner.submit(Task(id="q", role="coder", prompt="x"))
        assert queued.status() == "pending"
        await queued.cancel()
        hold.set()
        assert (await blocker).status == "completed"
    result = await queued
    assert result.status == "cancelled"
    assert (result.attempts, result.provider) == (0, None)
    assert [h.status for h in result.history] == ["pending", "cancelled"]
    assert result.error is not None
    assert result.error.code == "cancelled"
    assert {e.task_id for e in sink.events} == {"busy"}


async def test_cancelling_a_running_task_records_a_cancelled_attempt() -> None:
    """Cancelling mid-call ends the task cancelled and its attempt's event says so."""
    config = make_config()
    gates = {pid: Gate(p, Counter(), Counter()) for pid, p in simulated(config).items()}
    gates["a"].hold = anyio.Event()
    sink = MemorySink()
    async with open_runner(config, providers=gates, sink=sink) as runner:
        handle = await runner.submit(Task(id="t1", role="coder", prompt="x"))
        while gates["a"].started == 0:
            await anyio.lowlevel.checkpoint()
        assert handle.status() == "running"
        await handle.cancel()
        assert handle.done()
        assert handle.status() == "cancelled"
    result = await handle
    assert [h.status for h in result.history] == ["pending", "running", "cancelled"]
    assert result.history[-1].provider == "a"
    (event,) = sink.events
    assert (event.success, event.error_code, event.provider) == (False, "cancelled", "a")


async def test_cancelling_a_retrying_task() -> None:
    """Cancelling during the backoff wait ends the task cancelled from `retrying`."""
    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="server_error"))
    waiting = anyio.Event()

    async def slow_sleep(seconds: float) -> None:
        waiting.set()
        await anyio.sleep_forever()

    t = FakeTime()
    async with open_runner(
        config, providers=simulated(config, scripts), time=t, sleep=slow_sleep
    ) as runner:
        handle = await runner.submit(Task(id="t1", role="coder", prompt="x"))
        await waiting.wait()
        assert handle.status() == "retrying"
        await handle.cancel()
    result = await handle
    assert [h.status for h in result.history] == ["pending", "running", "retrying", "cancelled"]


async def test_cancelling_a_finished_task_keeps_its_result() -> None:
    """cancel() on a task that already finished changes nothing."""
    config = make_config()
    async with open_runner(config) as runner:
        handle = await runner.submit(Task(id="t1", role="coder", prompt="x"))
        result = await handle
        await handle.cancel()
    assert (await handle) is result
    assert result.status == "completed"


async def test_provider_error_message_reaches_the_result_scrubbed_by_adapter() -> None:
    """The last ProviderError's code, message and provider are the Result's error."""
    config = make_config(roles={})

    class Failing(Hanging):
        id = "d"

        async def complete(self, request: CompletionRequest) -> CompletionResponse:
            raise ProviderError("auth_failed", "invalid key", provider="d")

    providers = simulated(config)
    providers["d"] = Failing()
    async with open_runner(config, providers=providers) as runner:
        result = await runner.run(Task(id="t1", prompt="x"))
    assert result.status == "failed"
    assert result.role == "default"
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.retryable) == (
        "auth_failed", "invalid key", False,
    )  # fmt: skip
