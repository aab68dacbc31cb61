"""Supervision: whatever raises (a metrics sink, an observer, an adapter), the task ends
``failed`` with code ``unknown``, exactly once, and the runner keeps serving.

Plain tasks and workflows run under the same ``Supervisor.supervise``; each fault is
tried on both.  Pure core: asyncio and trio, simulated providers, fake time.
"""

from __future__ import annotations

import io
from typing import Any

import anyio
import pytest

from runner import HistoryEntry, Task, TaskExecutionContext
from runner.config import LoggingConfig, RoleConfig
from runner.metrics import MemorySink, MetricEvent
from tests.dispatch_support import FakeTime, log_lines, make_config, open_runner, simulated
from workers import CompletionRequest, CompletionResponse

pytestmark = pytest.mark.anyio

SECRET = "sk-live-0123456789"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Boom(Exception):
    """What the faulty parts raise; its message holds a secret that must never be logged."""

    def __init__(self) -> None:
        super().__init__(f"leaked {SECRET}")


class FaultySink(MemorySink):
    """A metrics sink that raises for the attempts of tasks whose id starts with ``bad``."""

    async def send(self, event: MetricEvent) -> None:
        if event.task_id.startswith("bad"):
            raise Boom
        await super().send(event)


class FaultyAdapter:
    """An adapter with a bug: it raises something that is not a ProviderError."""

    id = "c"
    type = "simulated"
    model = "model-c"

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        raise Boom

    async def check_credentials(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def faulty_observer(ctx: TaskExecutionContext, entry: HistoryEntry) -> None:
    """An observer that raises on every move of a task or stage whose id starts with ``bad``.

    Not on a workflow's own moves: those have a test of their own.
    """
    if ctx.id.startswith("bad") and ctx.workflow is None:
        raise Boom


# Each fault, set up so that only tasks named bad* meet it.  The role `lone` has
# one provider, so an adapter's bug cannot be rescued by a fallback.
FAULTS = ["sink", "observer", "adapter"]


def _runner(fault: str, log: io.StringIO) -> Any:
    config = make_config(
        roles={
            "lone": RoleConfig(provider="c"),
            "clarifier": RoleConfig(provider="c"),
            "planner": RoleConfig(provider="d"),
            "coder": RoleConfig(provider="a"),
            "reviewer": RoleConfig(provider="b"),
        },
        default_provider="c",
        logging=LoggingConfig(level="debug", format="json"),
    )
    t = FakeTime()
    providers = simulated(config, sleep=t.sleep)
    kw: dict[str, Any] = {}
    sink = MemorySink()
    if fault == "sink":
        sink = FaultySink()
    elif fault == "observer":
        kw["observer"] = faulty_observer
    else:

        class BadOnlyForBad(FaultyAdapter):
            async def complete(self, request: CompletionRequest) -> CompletionResponse:
                if request.task_id.startswith("bad"):
                    raise Boom
                return await good.complete(request)

        good = providers["c"]
        providers["c"] = BadOnlyForBad()
    return open_runner(config, providers=providers, time=t, sink=sink, log=log, **kw)


@pytest.mark.parametrize("fault", FAULTS)
async def test_plain_task_ends_failed_unknown_and_the_runner_goes_on(fault: str) -> None:
    """A raising sink, observer or adapter fails the task `unknown`; later tasks complete."""
    log = io.StringIO()
    async with _runner(fault, log) as runner:
        bad = await runner.run(Task(id="bad-1", role="lone", prompt="x"))
        good = [await runner.run(Task(id=f"good-{i}", role="lone", prompt="x")) for i in range(3)]
        stats = runner.statistics()
    assert bad.status == "failed"
    assert bad.error is not None
    assert bad.error.code == "unknown"
    assert [h.status for h in bad.history] == ["pending", "running", "failed"]
    assert [r.status for r in good] == ["completed"] * 3
    assert (stats.completed, stats.failed, stats.running, stats.queued) == (3, 1, 0, 0)
    text = log.getvalue()
    assert SECRET not in text
    assert "Boom" in text


@pytest.mark.parametrize("fault", FAULTS)
async def test_workflow_stage_ends_failed_unknown_and_the_runner_goes_on(fault: str) -> None:
    """The same faults in a workflow's first stage fail that stage and the workflow `unknown`."""
    log = io.StringIO()
    async with _runner(fault, log) as runner:
        bad = await runner.run_workflow(input="i", id="bad-w")
        good = await runner.run_workflow(input="i", id="good-w")
    assert bad.status == "failed"
    assert bad.error is not None
    assert bad.error.code == "unknown"
    assert bad.stages is not None
    assert [(s.stage, s.status) for s in bad.stages] == [("clarification", "failed")]
    assert bad.stages[0].error is not None
    assert bad.stages[0].error.code == "unknown"
    assert good.status == "completed"
    assert SECRET not in log.getvalue()


async def test_workflow_whose_own_move_fails_ends_failed_unknown() -> None:
    """A workflow is supervised too: an observer failing on its own move fails it `unknown`."""

    def observe(ctx: TaskExecutionContext, entry: HistoryEntry) -> None:
        if ctx.id == "bad-w":
            raise Boom

    async with open_runner(make_config(), observer=observe) as runner:
        bad = await runner.run_workflow(input="i", id="bad-w")
        good = await runner.run_workflow(input="i", id="good-w")
    assert (bad.status, bad.error.code if bad.error else None) == ("failed", "unknown")
    assert [h.status for h in bad.history] == ["pending", "running", "failed"]
    assert bad.stages == []
    assert good.status == "completed"


async def test_crash_cause_goes_to_the_debug_log_without_the_message() -> None:
    """The warning names the exception; the debug line says where it was raised, not its text."""
    log = io.StringIO()
    async with _runner("sink", log) as runner:
        await runner.run(Task(id="bad-1", role="lone", prompt="x"))
    lines = [line for line in log_lines(log) if line.get("event") == "task_crashed"]
    assert [line["level"] for line in lines] == ["warning", "debug"]
    assert lines[0]["exception"] == "Boom"
    assert lines[1]["cause"].startswith("Boom at ")
    assert "test_supervise.py" in lines[1]["cause"]
    assert SECRET not in log.getvalue()


async def test_observer_failing_on_the_last_move_keeps_the_result() -> None:
    """A task that completed stays completed when only the observer of that move fails."""

    def observe(ctx: TaskExecutionContext, entry: HistoryEntry) -> None:
        if entry.status == "completed":
            raise Boom

    async with open_runner(make_config(), observer=observe) as runner:
        first = await runner.run(Task(id="t1", role="coder", prompt="x"))
        second = await runner.run(Task(id="t2", role="coder", prompt="x"))
    assert (first.status, second.status) == ("completed", "completed")
    assert [h.status for h in first.history] == ["pending", "running", "completed"]


async def test_broken_log_stream_loses_lines_not_tasks() -> None:
    """An execution log that cannot be written costs its lines only: every task completes."""

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stream closed")

    config = make_config(logging=LoggingConfig(level="info", format="json"))
    tasks = (Task(id=f"t{i}", role="coder", prompt="x") for i in range(5))
    async with open_runner(config, log=Closed()) as runner:
        results = [result async for result in runner.run_many(tasks)]
        stats = runner.statistics()
    assert sorted(r.id for r in results) == [f"t{i}" for i in range(5)]
    assert {r.status for r in results} == {"completed"}
    assert (stats.completed, stats.failed) == (5, 0)


async def test_cancel_between_two_attempts_stops_before_the_next() -> None:
    """A cancel that arrives while the task records an attempt ends it before the next one."""
    from tests.dispatch_support import Scripts
    from workers.simulated import Fault

    release = anyio.Event()
    arrived = anyio.Event()

    class SlowSink(MemorySink):
        async def send(self, event: MetricEvent) -> None:
            await super().send(event)
            if len(self.events) == 1:
                arrived.set()
                await release.wait()

    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="server_error"))
    t = FakeTime()
    sink = SlowSink()
    async with (
        open_runner(config, providers=simulated(config, scripts, t.sleep), time=t, sink=sink) as r,
        anyio.create_task_group() as tg,
    ):
        handle = await r.submit(Task(id="t1", role="coder", prompt="x"))
        await arrived.wait()
        tg.start_soon(handle.cancel)
        await anyio.lowlevel.checkpoint()
        release.set()
        result = await handle
    assert result.status == "cancelled"
    assert [h.status for h in result.history] == ["pending", "running", "retrying", "cancelled"]
    assert result.attempts == 1
    assert [e.error_code for e in sink.events] == ["server_error"]
