"""Runners sharing limits through PostgreSQL: the dispatcher side of ``shared_limits``.

Two Runners stand for two workers: each has its own pool and
:class:`SharedLimits` on one database.  Asyncio only.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from runner import Runner, Task
from runner.cluster._limits import SharedLimits
from runner.cluster._pool import open_database
from runner.cluster._schema import migrate
from runner.config._model import CooldownConfig, RetryConfig, RoleConfig
from runner.metrics._writer import MemorySink
from tests.dispatch_support import Scripts, make_config, sim, simulated
from tests.pg_support import pg_url
from workers.simulated import Fault

__all__ = ["pg_url"]

pytestmark = pytest.mark.anyio

CONFIG = make_config(
    providers=(sim("p", max_concurrency=2), sim("q")),
    roles={"coder": RoleConfig(provider="p", fallbacks=("q",))},
    default_provider="q",
    retry=RetryConfig(max_attempts=1, initial_delay=0, jitter=0),
    cooldown=CooldownConfig(failures=1, seconds=60),
)


@asynccontextmanager
async def _runner(url: str, name: str, scripts: Scripts) -> AsyncIterator[Runner]:
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_database(url))
        await migrate(db)
        limits = SharedLimits(
            db, CONFIG.providers, worker_id=name, lease=30, cooldown=60, failures=1
        )
        tg = await stack.enter_async_context(anyio.create_task_group())
        await tg.start(limits.run)
        await tg.start(db.listen, limits.channels(), limits.on_reconnect)
        runner = Runner(
            CONFIG,
            metrics=MemorySink(),
            providers=simulated(CONFIG, scripts),
            log_stream=io.StringIO(),
            limits=limits,
        )
        await stack.enter_async_context(runner)
        yield runner
        tg.cancel_scope.cancel()


async def test_cooldown_on_one_runner_steers_the_other(pg_url: str) -> None:
    """p fails on runner A and cools down; runner B then goes straight to the fallback."""
    scripts = Scripts()
    scripts.plan("p", "first", Fault(code="server_error"))
    async with _runner(pg_url, "a", scripts) as a, _runner(pg_url, "b", scripts) as b:
        first = await a.run(Task(id="first", role="coder", prompt="x"))
        assert first.provider == "q"  # fell back after p's failure started the cooldown
        with anyio.fail_after(5):
            while b._registry is not None and not b._registry.statistics()["p"].cooling_until:  # noqa: ASYNC110 - the notification arrives from the database
                await anyio.sleep(0.02)
        second = await b.run(Task(id="second", role="coder", prompt="x"))
    assert second.provider == "q"
    assert [pid for pid, r in scripts.requests if r.task_id == "second"] == ["q"]


async def test_max_concurrency_holds_across_runners(pg_url: str) -> None:
    """p admits 2 calls at a time in the whole cluster, however many runners call it."""
    running = peak = 0

    class Counting:
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        async def complete(self, request: object) -> object:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await anyio.sleep(0.02)
                return await self._inner.complete(request)  # type: ignore[attr-defined]
            finally:
                running -= 1

    scripts = Scripts()
    async with AsyncExitStack() as stack:
        runners = []
        for name in ("a", "b", "c"):
            db = await stack.enter_async_context(open_database(pg_url))
            await migrate(db)
            limits = SharedLimits(
                db, CONFIG.providers, worker_id=name, lease=30, cooldown=60, failures=1
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(limits.run)
            await tg.start(db.listen, limits.channels(), limits.on_reconnect)
            providers = simulated(CONFIG, scripts)
            providers["p"] = Counting(providers["p"])  # type: ignore[assignment]
            runner = Runner(
                CONFIG, metrics=MemorySink(), providers=providers, log_stream=io.StringIO(),
                limits=limits,
            )  # fmt: skip
            runners.append(await stack.enter_async_context(runner))
            stack.callback(tg.cancel_scope.cancel)

        async def many(runner: Runner, tag: str) -> None:
            tasks = [Task(id=f"{tag}{i}", role="coder", prompt="x") for i in range(8)]
            async for result in runner.run_many(tasks):
                assert result.status == "completed"

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for runner, tag in zip(runners, "abc", strict=True):
                    tg.start_soon(many, runner, tag)
    assert peak == 2
