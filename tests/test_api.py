"""The async Python API: Runner, TaskHandle, run_many, shutdown, statistics, the log.

Pure core: asyncio and trio, simulated providers, MemorySink, fake time.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import runner
from runner import HistoryEntry, Message, Result, Runner, Task, UsageError
from runner._context import TaskExecutionContext
from runner._task_check import task_problem
from runner.config import LoggingConfig
from runner.metrics import MemorySink
from tests.dispatch_support import FakeTime, Gate, log_lines, make_config, open_runner, simulated

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def gated(config: object) -> tuple[dict[str, Gate], anyio.Event]:
    hold = anyio.Event()
    gates = {pid: Gate(p, Counter(), Counter()) for pid, p in simulated(config).items()}  # type: ignore[arg-type]
    for g in gates.values():
        g.hold = hold
    return gates, hold


def test_public_names_are_exported() -> None:
    """The package exports the API's names."""
    for name in ("Runner", "TaskHandle", "RunnerStatistics", "TaskExecutionContext"):
        assert name in runner.__all__
        assert getattr(runner, name) is not None
    assert runner.__all__ == sorted(runner.__all__)


def test_every_caller_visible_error_is_in_the_one_tree() -> None:
    """Storage failures, a full queue and a shutdown are RunnerErrors a caller can catch by name."""
    names = (
        "ConfigError", "ProviderError", "QueueFull", "ShuttingDown", "StorageError",
        "TaskError", "TransitionError", "UsageError",
    )  # fmt: skip
    for name in names:
        assert name in runner.__all__
        assert issubclass(getattr(runner, name), runner.RunnerError)
    # Both were UsageErrors before they had names of their own: old handlers still see them.
    assert issubclass(runner.ShuttingDown, runner.UsageError)
    assert issubclass(runner.StorageError, runner.UsageError)
    full = runner.QueueFull(3, retry_after=2)
    assert (full.room, full.retry_after) == (3, 2)
    assert str(full) == "the queue is full (3 free places); retry after 2 s"


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        (Task(), "missing 'prompt' or 'messages'"),
        (
            Task(prompt="p", messages=(Message(role="user", content="m"),)),
            "give 'prompt' or 'messages', not both",
        ),
        (Task(workflow="default"), "workflow 'default' needs 'input'"),
        (Task(workflow="x", input="i"), "unknown workflow 'x'; known: default"),
        (
            Task(workflow="default", input="i", prompt="p"),
            "a workflow task takes 'input', not 'prompt' or 'messages'",
        ),
        (Task(input="i"), "'input' belongs to a workflow task; give 'workflow' or use 'prompt'"),
        (
            Task(messages=(Message(role="system", content="s"),)),
            "'messages' has no user or assistant message",
        ),
        (Task(id=" ", prompt="p"), "'id' is empty"),
        (
            Task(id="a\nb", prompt="p"),
            "'id' contains the control character U+000A at position 2;"
            " use printable characters only",
        ),
        (Task(id="x" * 10_000, prompt="p"), "'id' is 10,000 characters long; the most is 256"),
        (Task(id="..", prompt="p"), "'id' cannot be '..': a URL path would resolve it away"),
        (Task(id="x" * 256, prompt="p"), None),
        (Task(prompt="p"), None),
        (Task(workflow="default", input="i"), None),
    ],
)
def test_task_problem(task: Task, problem: str | None) -> None:
    """task_problem names what is wrong with a task in one sentence, or None."""
    assert task_problem(task, {"default"}) == problem


async def test_invalid_task_is_a_rejected_result_not_an_exception() -> None:
    """An invalid Task comes back `rejected` with code invalid_task and the problem."""
    async with open_runner(make_config()) as r:
        result = await r.run(Task(id="bad", role="coder"))
        stats = r.statistics()
    assert result.status == "rejected"
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "invalid_task",
        "missing 'prompt' or 'messages'",
    )
    assert stats.rejected == 1


async def test_a_bad_id_is_rejected_by_the_api_as_by_submit() -> None:
    """The API applies the same id rule as the tasks file and the worker: rejected, not run."""
    async with open_runner(make_config()) as r:
        result = await r.run(Task(id="x" * 10_000, role="coder", prompt="p"))
    assert result.status == "rejected"
    assert result.error is not None
    assert result.error.message == "'id' is 10,000 characters long; the most is 256"


async def test_run_submit_await_and_generated_ids() -> None:
    """run() returns the Result; submit() gives an awaitable handle; ids are generated."""
    async with open_runner(make_config()) as r:
        first = await r.run(Task(role="coder", prompt="a"))
        handle = await r.submit(Task(role="reviewer", prompt="b"))
        second = await handle
        assert handle.done()
        assert handle.status() == "completed"
        assert (await handle.wait()) is second
    assert first.id != second.id
    assert handle.id == second.id
    assert (first.provider, second.provider) == ("a", "b")


async def test_messages_system_turns_go_to_the_system_prompt() -> None:
    """System messages in `messages` become the request's system prompt."""
    from tests.dispatch_support import Scripts

    config = make_config()
    scripts = Scripts()
    async with open_runner(config, providers=simulated(config, scripts)) as r:
        await r.run(
            Task(
                role="coder",
                system="Be terse.",
                messages=(
                    Message(role="system", content="Use Python."),
                    Message(role="user", content="hi"),
                ),
            )
        )
    ((_, request),) = scripts.requests
    assert request.system == "Be terse.\n\nUse Python."
    assert [m.role for m in request.messages] == ["user"]


async def test_run_many_sync_and_async_iterables_one_result_each() -> None:
    """run_many takes any (async) iterable and yields one Result per task."""

    async def agen() -> AsyncIterator[Task]:
        for i in range(25):
            yield Task(id=f"a{i}", role="coder", prompt="x")

    async with open_runner(make_config()) as r:
        sync_ids = [
            res.id async for res in r.run_many(Task(id=f"s{i}", prompt="x") for i in range(25))
        ]
        async_ids = [res.id async for res in r.run_many(agen())]
    assert sorted(sync_ids) == sorted(f"s{i}" for i in range(25))
    assert sorted(async_ids) == sorted(f"a{i}" for i in range(25))


async def test_run_many_pulls_only_as_capacity_frees() -> None:
    """run_many never holds more than twice the concurrency of tasks pulled but not yielded."""
    pulled = 0

    def tasks() -> Iterator[Task]:
        nonlocal pulled
        for i in range(500):
            pulled += 1
            yield Task(id=f"t{i}", prompt="x")

    ahead = []
    async with open_runner(make_config(concurrency=4)) as r:
        yielded = 0
        async for _ in r.run_many(tasks()):
            yielded += 1
            ahead.append(pulled - yielded)
    assert yielded == 500
    assert max(ahead) <= 8


async def test_run_many_starts_calls_before_taking_in_the_whole_window() -> None:
    """A big first wave: calls start a burst of tasks after run_many begins, not the window's end.

    The window here is 128 tasks; were they all taken in before any worker
    ran, no call would have started when the last of them was pulled.
    """
    config = make_config(concurrency=64)
    gates, hold = gated(config)
    started_at_pull: list[int] = []

    def tasks() -> Iterator[Task]:
        for i in range(128):
            started_at_pull.append(gates["a"].started)
            yield Task(id=f"t{i}", role="coder", prompt="x")

    results: list[Result] = []

    async def consume(r: Runner) -> None:
        results.extend([res async for res in r.run_many(tasks())])

    async with open_runner(config, providers=gates) as r, anyio.create_task_group() as tg:
        tg.start_soon(consume, r)
        while len(started_at_pull) < 128:
            await anyio.lowlevel.checkpoint()
        hold.set()
    assert len(results) == 128
    # Two bursts of 16 in, the first burst's calls have begun (on trio,
    # whose scheduler may run run_many first within a turn, by the third).
    assert started_at_pull[0] == 0
    assert started_at_pull[48] >= 16


async def leave_after_first(r: Runner, tasks: list[Task]) -> None:
    """Take run_many's first result (the task ``fast``), then close the stream."""
    async with aclosing(r.run_many(tasks)) as results:
        async for result in results:
            assert result.id == "fast"
            break


async def test_leaving_run_many_early_cancels_the_rest() -> None:
    """Closing run_many's iterator early cancels the tasks it had started."""
    config = make_config(concurrency=2)
    gates, hold = gated(config)
    gates["d"].hold = None  # the first task (role planner) answers at once
    async with open_runner(config, providers=gates) as r:
        tasks = [Task(id="fast", role="planner", prompt="x")] + [
            Task(id=f"slow{i}", role="coder", prompt="x") for i in range(3)
        ]
        await leave_after_first(r, tasks)
    stats = r.statistics()
    assert stats.completed == 1
    assert stats.cancelled == 3
    assert stats.queued == stats.running == 0
    assert not hold.is_set()


async def test_leaving_run_many_early_cancels_its_own_tasks_only() -> None:
    """Closing one stream cancels its tasks at once; a task submitted on its own runs on."""
    config = make_config(concurrency=4)
    gates, hold = gated(config)
    gates["d"].hold = None  # the planner answers at once
    async with open_runner(config, providers=gates) as r:
        alone = await r.submit(Task(id="alone", role="coder", prompt="x"))
        tasks = [Task(id="fast", role="planner", prompt="x")] + [
            Task(id=f"slow{i}", role="coder", prompt="x") for i in range(2)
        ]
        await leave_after_first(r, tasks)
        with anyio.fail_after(5):
            while r.statistics().cancelled < 2:
                await anyio.lowlevel.checkpoint()
        stats = r.statistics()
        assert (stats.cancelled, stats.running) == (2, 1)  # the stream's two; "alone" runs on
        hold.set()
        assert (await alone).status == "completed"


async def test_shutdown_lets_running_finish_and_cancels_queued() -> None:
    """shutdown(): running tasks finish within the grace period, queued ones are cancelled."""
    config = make_config(concurrency=1)
    gates, hold = gated(config)
    async with open_runner(config, providers=gates) as r:
        running = await r.submit(Task(id="run", role="coder", prompt="x"))
        queued = await r.submit(Task(id="queued", role="coder", prompt="x"))
        while gates["a"].started == 0:
            await anyio.lowlevel.checkpoint()
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.shutdown, 3600.0)
            assert (await queued).status == "cancelled"
            assert running.status() == "running"
            with pytest.raises(runner.ShuttingDown, match="shutting down"):
                await r.submit(Task(prompt="late"))
            hold.set()
    assert (await running).status == "completed"
    result = await queued
    assert [h.status for h in result.history] == ["pending", "cancelled"]


async def test_shutdown_cancels_running_tasks_after_the_grace_period() -> None:
    """With no grace left, running tasks end cancelled and their attempt is recorded."""
    config = make_config()
    gates, _ = gated(config)
    sink = MemorySink()
    async with open_runner(config, providers=gates, sink=sink) as r:
        handles = [await r.submit(Task(id=f"t{i}", role="coder", prompt="x")) for i in range(3)]
        while gates["a"].started < 2:
            await anyio.lowlevel.checkpoint()
        await r.shutdown(grace=0)
        assert all(h.done() for h in handles)
    results = [await h for h in handles]
    assert [res.status for res in results] == ["cancelled"] * 3
    assert gates["a"].started >= 2
    assert [e.error_code for e in sink.events] == ["cancelled"] * gates["a"].started


async def test_run_many_waits_for_room_when_the_queue_is_full() -> None:
    """Queue full (held calls, queued submits): run_many waits for room, then yields every task."""
    config = make_config(concurrency=2)
    gates, hold = gated(config)
    pulled: list[str] = []

    def source() -> Iterator[Task]:
        for i in range(6):
            pulled.append(f"m{i}")
            yield Task(id=f"m{i}", prompt="p")

    results: list[Result] = []
    async with open_runner(config, providers=gates) as r:
        handles = [await r.submit(Task(id=f"s{i}", prompt="p")) for i in range(4)]
        # Two calls held, two tasks queued: the queue (its size is the concurrency) is full.

        async def consume() -> None:
            results.extend([res async for res in r.run_many(source())])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert pulled == ["m0"]  # pulled, waiting for room: nothing more is pulled
            assert results == []
            hold.set()
    assert sorted(res.id for res in results) == [f"m{i}" for i in range(6)]
    assert {res.status for res in results} == {"completed"}
    assert [(await h).status for h in handles] == ["completed"] * 4


async def test_run_many_after_shutdown_yields_cancelled_results() -> None:
    """Tasks pulled by run_many after shutdown come back cancelled, one Result each."""
    async with open_runner(make_config()) as r:
        await r.shutdown()
        results = [res async for res in r.run_many([Task(id="x", prompt="p")])]
    assert [(res.id, res.status) for res in results] == [("x", "cancelled")]
    assert results[0].error is not None
    assert results[0].error.code == "cancelled"


async def test_cancelling_the_surrounding_scope_leaves_every_task_terminal() -> None:
    """Cancelling the scope around `async with Runner` resolves every handle as cancelled."""
    config = make_config(concurrency=2)
    gates, _ = gated(config)
    sink = MemorySink()
    handles = []
    with anyio.CancelScope() as scope:
        async with open_runner(config, providers=gates, sink=sink) as r:
            handles = [await r.submit(Task(id=f"t{i}", role="coder", prompt="x")) for i in range(4)]
            wf = await r.submit(Task(id="w", workflow="default", input="x"))
            handles.append(wf)
            while gates["a"].started < 2:
                await anyio.lowlevel.checkpoint()
            scope.cancel()
            await anyio.sleep_forever()
    assert all(h.done() for h in handles)
    assert [h.status() for h in handles] == ["cancelled"] * 5
    for h in handles:
        result = await h
        assert result.history[-1].status == "cancelled"
    assert [e.error_code for e in sink.events] == ["cancelled", "cancelled"]


async def test_an_error_in_the_block_cancels_tasks_and_propagates() -> None:
    """An exception inside `async with` cancels the tasks and is raised unchanged."""
    config = make_config()
    gates, _ = gated(config)
    handles = []

    async def fail_inside() -> None:
        async with open_runner(config, providers=gates) as r:
            handles.append(await r.submit(Task(id="t", role="coder", prompt="x")))
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await fail_inside()
    (handle,) = handles
    assert (await handle).status == "cancelled"


async def test_run_cancelled_by_its_caller_cancels_the_task() -> None:
    """Cancelling a run() call cancels the task it started."""
    config = make_config()
    gates, _ = gated(config)
    async with open_runner(config, providers=gates) as r:
        with anyio.move_on_after(0):
            await r.run(Task(id="t", role="coder", prompt="x"))
        stats = r.statistics()
    assert stats.cancelled == 1


async def test_api_misuse_raises_usage_error() -> None:
    """Submitting before entering, or entering twice, is a UsageError."""
    r = open_runner(make_config())
    with pytest.raises(UsageError, match="not open"):
        await r.submit(Task(prompt="x"))
    async with r:
        with pytest.raises(UsageError, match="entered only once"):
            await r.__aenter__()


async def test_statistics_count_retries_and_fallbacks() -> None:
    """statistics() counts outcomes, retries and fallbacks."""
    from tests.dispatch_support import Scripts
    from workers.simulated import Fault

    config = make_config()
    scripts = Scripts()
    scripts.plan("a", "t1", Fault(code="server_error"), Fault(code="auth_failed"))
    async with open_runner(config, providers=simulated(config, scripts)) as r:
        await r.run(Task(id="t1", role="coder", prompt="x"))
        await r.run(Task(id="t2", role="coder", prompt="x"))
        stats = r.statistics()
    assert (stats.completed, stats.failed, stats.cancelled) == (2, 0, 0)
    assert (stats.retries, stats.fallbacks) == (1, 1)


async def test_observer_sees_every_move() -> None:
    """The observer is called once per status move, with the context and the entry."""
    seen: list[tuple[str, str]] = []

    def observe(ctx: TaskExecutionContext, entry: HistoryEntry) -> None:
        seen.append((ctx.id, entry.status))

    async with open_runner(make_config(), observer=observe) as r:
        result: Result = await r.run(Task(id="t", role="coder", prompt="x"))
    assert seen == [("t", "running"), ("t", "completed")]
    assert len(result.history) == 3


async def test_console_log_and_level_filter() -> None:
    """Console lines carry the move's fields; level warning writes no move lines."""
    console = io.StringIO()
    async with open_runner(
        make_config(logging=LoggingConfig(level="info", format="console")), log=console
    ) as r:
        await r.run(Task(id="t9", role="coder", prompt="do not log me"))
    text = console.getvalue()
    assert "task_id=t9" in text
    assert "role=coder" in text
    assert "provider=a" in text
    assert "status=completed" in text
    assert "do not log me" not in text
    quiet = io.StringIO()
    async with open_runner(make_config(logging=LoggingConfig(level="warning")), log=quiet) as r:
        await r.run(Task(id="t9", role="coder", prompt="x"))
    assert quiet.getvalue() == ""


async def test_json_log_one_line_per_move() -> None:
    """JSON lines: one per move, with task id, role, provider, attempt and status."""
    log = io.StringIO()
    async with open_runner(make_config(), log=log) as r:
        await r.run(Task(id="t", role="reviewer", prompt="x"))
    lines = log_lines(log)
    assert [
        (ln["task_id"], ln["role"], ln["provider"], ln["attempt"], ln["status"]) for ln in lines
    ] == [
        ("t", "reviewer", "b", 1, "running"),
        ("t", "reviewer", "b", 1, "completed"),
    ]


async def test_from_config_reads_a_yaml_file(tmp_path: Path) -> None:
    """Runner.from_config(path) loads and validates the file."""
    path = tmp_path / "runner.yaml"
    path.write_text(
        "version: 1\n"
        "providers:\n  - {id: sim, type: simulated}\n"
        "roles:\n  coder: {provider: sim}\n"
        "default_provider: sim\n"
        "metrics: {store: none}\n"
        "logging: {level: warning}\n",
        encoding="utf-8",
    )
    t = FakeTime()
    async with Runner.from_config(
        path, clock=t.clock, sleep=t.sleep, log_stream=io.StringIO()
    ) as r:
        result = await r.run(Task(role="coder", prompt="x"))
    assert (result.status, result.provider) == ("completed", "sim")
