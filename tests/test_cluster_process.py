"""Cluster mode with real worker processes on one real PostgreSQL database.

Marked ``slow`` (they spawn interpreters); sizes are small here, and the
benchmarks (``python -m benchmarks --only cluster``) run the big ones.
Asyncio only.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import asyncpg
import pytest

from tests.cluster_support import (
    CountingProvider,
    WorkerProcess,
    cluster_config,
    eventually,
    post_jsonl,
    stop_all,
)
from tests.pg_support import pg_url, terminate_backends

__all__ = ["pg_url"]

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def provider() -> AsyncIterator[CountingProvider]:
    async with CountingProvider(delay=0.05) as p:
        yield p


async def _start(
    tmp: Path, url: str, provider: CountingProvider, n: int, **kw: object
) -> list[WorkerProcess]:
    workers = [
        WorkerProcess(cluster_config(tmp, f"w{i}", provider, **kw), url, tmp / f"w{i}.log")  # type: ignore[arg-type]
        for i in range(n)
    ]
    try:
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.start)
    except BaseException:
        # One did not start: the others must not outlive the test.
        with anyio.CancelScope(shield=True):
            await _stop_all(workers)
        raise
    return workers


async def _results(url: str) -> dict[str, tuple[str, bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, status, result IS NOT NULL AS done FROM runner_tasks")
    finally:
        await conn.close()
    return {r["id"]: (r["status"], r["done"]) for r in rows}


async def _wait_done(url: str, n: int, within: float = 60) -> dict[str, tuple[str, bool]]:
    found: dict[str, tuple[str, bool]] = {}

    async def all_done() -> bool:
        nonlocal found
        found = await _results(url)
        return len(found) == n and all(done for _, done in found.values())

    await eventually(all_done, within)
    return found


def _true(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def _stop_all(workers: list[WorkerProcess]) -> None:
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.stop)


class _Stops:
    """A worker whose stop() fails with ``error`` (None: exits with ``code``)."""

    def __init__(self, stopped: list[str], name: str, error: Exception | None = None) -> None:
        self._stopped, self._name, self._error = stopped, name, error

    async def stop(self) -> int:
        self._stopped.append(self._name)
        if self._error is not None:
            raise self._error
        return 0


async def test_stop_all_stops_every_worker_and_raises_the_first_failure() -> None:
    """A worker whose stop() fails does not leave the ones after it running."""
    stopped: list[str] = []
    first, second = AssertionError("a ignored SIGTERM"), AssertionError("c ignored SIGTERM")
    workers = [
        _Stops(stopped, "a", first),
        _Stops(stopped, "b"),
        _Stops(stopped, "c", second),
        _Stops(stopped, "d"),
    ]
    with pytest.raises(AssertionError) as caught:
        await stop_all(workers)
    assert caught.value is first
    assert stopped == ["a", "b", "c", "d"]
    assert await stop_all([_Stops(stopped, "e"), _Stops(stopped, "f")]) == [0, 0]


async def test_any_worker_answers_for_any_task(
    pg_url: str, provider: CountingProvider, tmp_path: Path
) -> None:
    """POST to one worker, GET ?wait from another, DELETE from a third: one queue."""
    workers = await _start(tmp_path, pg_url, provider, 3)
    a, b, c = (w.url for w in workers)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{a}/v1/tasks", json={"id": "t1", "prompt": "t1"}) as r:
                assert r.status == 202
            async with s.get(f"{b}/v1/tasks/t1?wait=10") as r:
                view = await r.json()
            assert view["status"] == "completed"
            assert view["result"]["output"] == "done t1"
            # The same task POSTed to another worker is a duplicate of the first;
            # its id reused for another task is a conflict there too.
            async with s.post(f"{c}/v1/tasks", json={"id": "t1", "prompt": "t1"}) as r:
                assert (await r.json()) == {"id": "t1", "duplicate": True}
            async with s.post(f"{c}/v1/tasks", json={"id": "t1", "prompt": "other"}) as r:
                assert r.status == 409
                assert (await r.json())["error"] == "id_conflict"
            # A long task, cancelled from a worker that may not be running it.
            async with s.post(f"{a}/v1/tasks", json={"id": "long", "prompt": "sleep:20"}) as r:
                assert r.status == 202
            await eventually(_true(lambda: provider.calls["sleep:20"] > 0), 10)
            started = anyio.current_time()
            async with s.delete(f"{c}/v1/tasks/long") as r:
                view = await r.json()
            assert view["status"] == "cancelled"
            assert anyio.current_time() - started < 5
            assert view["result"]["error"]["code"] == "cancelled"
            async with s.get(f"{b}/v1/tasks/nope") as r:
                assert r.status == 404
    finally:
        await _stop_all(workers)
    assert provider.calls["sleep:20"] == 1


async def test_killed_worker_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """SIGKILL one of three workers mid-run and restart it: every id ends exactly once.

    Provider calls repeated are at most the tasks the killed worker held
    when it died (at-least-once execution), and none is lost.
    """
    n = 3000  # the figure: 3,000 tasks posted round-robin to three workers
    # Slow enough that every task is queued well before a quarter are done.
    async with CountingProvider(delay=0.2) as provider:
        await _killed_worker_run(pg_url, provider, tmp_path, n)


async def _killed_worker_run(
    pg_url: str, provider: CountingProvider, tmp_path: Path, n: int
) -> None:
    workers = await _start(tmp_path, pg_url, provider, 3, concurrency=30)
    try:
        async with aiohttp.ClientSession() as s:
            for k in range(0, n, 50):
                target = workers[(k // 50) % 3].url
                await post_jsonl(
                    s, target, [{"id": f"t{i}", "prompt": f"t{i}"} for i in range(k, k + 50)]
                )

        async def quarter_done() -> bool:
            return sum(1 for _, done in (await _results(pg_url)).values() if done) >= n // 4

        await eventually(quarter_done)
        victim = workers[1]
        await victim.kill()
        conn = await asyncpg.connect(pg_url)
        try:
            owners = await conn.fetch(
                "SELECT owner, count(*) AS n FROM runner_tasks"
                " WHERE result IS NULL AND owner IS NOT NULL GROUP BY owner"
            )
        finally:
            await conn.close()
        log = victim.log.read_text()
        found_id = re.search(r", worker (\S+)\)", log)
        assert found_id is not None, log
        victim_id = found_id[1]
        held = sum(r["n"] for r in owners if r["owner"] == victim_id)
        await victim.start()
        found = await _wait_done(pg_url, n)
    finally:
        await _stop_all(workers)
    assert sorted(found) == sorted(f"t{i}" for i in range(n))
    assert {status for status, _ in found.values()} == {"completed"}
    assert all(provider.calls[f"t{i}"] >= 1 for i in range(n))
    # The kill landed mid-run: the victim held tasks, and only those can repeat.
    assert held > 0, (victim_id, owners)
    assert provider.repeated() <= held, (provider.repeated(), held)


async def test_connections_cut_mid_run_lose_nothing(
    pg_url: str, provider: CountingProvider, tmp_path: Path
) -> None:
    """Every connection of every worker cut by the server, twice, mid-run: the run completes.

    This stands in for a database restart (see tests/pg_support.py): the
    workers see their connections end and must reconnect.
    """
    n = 200
    workers = await _start(tmp_path, pg_url, provider, 2)
    try:
        async with aiohttp.ClientSession() as s:
            for k in range(0, n, 10):
                await post_jsonl(
                    s,
                    workers[(k // 10) % 2].url,
                    [{"id": f"t{i}", "prompt": f"t{i}"} for i in range(k, k + 10)],
                )
        for _ in range(2):
            await anyio.sleep(0.3)
            assert await terminate_backends(pg_url) > 0
        found = await _wait_done(pg_url, n)
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{workers[0].url}/v1/tasks/t7?wait=1") as r,
        ):
            assert (await r.json())["status"] == "completed"
        conn = await asyncpg.connect(pg_url)
        try:
            reclaimed = await conn.fetchval("SELECT count(*) FROM runner_tasks WHERE claims > 1")
        finally:
            await conn.close()
    finally:
        codes = await stop_all(workers)
    assert {status for status, _ in found.values()} == {"completed"}
    assert codes == [0, 0]
    # A call is made again only for a task whose lease ran out while the
    # connections were down (at least once); normally there is none.
    assert provider.repeated() <= reclaimed


async def test_graceful_stop_hands_tasks_to_the_others(
    pg_url: str, provider: CountingProvider, tmp_path: Path
) -> None:
    """SIGTERM on a busy worker: what it does not finish within the grace runs elsewhere."""
    workers = await _start(tmp_path, pg_url, provider, 2, extra="")
    try:
        async with aiohttp.ClientSession() as s:
            await post_jsonl(
                s, workers[0].url, [{"id": f"t{i}", "prompt": f"t{i}"} for i in range(100)]
            )
        assert await workers[0].stop() == 0
        found = await _wait_done(pg_url, 100, within=30)
    finally:
        await _stop_all(workers)
    assert {status for status, _ in found.values()} == {"completed"}


async def test_newer_schema_is_exit_2(pg_url: str, tmp_path: Path) -> None:
    """A worker refuses a database written by a newer runner: exit 2, one message."""
    from runner.cluster._pool import open_database
    from runner.cluster._schema import SCHEMA_VERSION, migrate

    async with open_database(pg_url) as db:
        await migrate(db)
        await db.execute("INSERT INTO runner_schema (version) VALUES ($1)", SCHEMA_VERSION + 5)
    async with CountingProvider() as p:
        config = cluster_config(tmp_path, "w", p)
    result = await anyio.run_process(
        [sys.executable, "-m", "runner", "worker", "--config", str(config)],
        env={**os.environ, "RUNNER_DATABASE_URL": pg_url},
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 2
    assert f"has schema version {SCHEMA_VERSION + 5}, newer than this runner" in err
    assert "Traceback" not in err


async def test_unreachable_database_is_exit_2_with_one_line(tmp_path: Path) -> None:
    """A worker whose database does not answer says so in one line and exits 2."""
    async with CountingProvider() as p:
        config = cluster_config(tmp_path, "w", p)
    result = await anyio.run_process(
        [sys.executable, "-m", "runner", "worker", "--config", str(config)],
        env={
            **os.environ,
            "RUNNER_DATABASE_URL": "postgresql://bob:hunter2@127.0.0.1:1/db",
        },
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 2
    assert "cannot reach the cluster database postgresql://bob:***@127.0.0.1:1/db" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


async def test_submit_straight_into_the_database(
    pg_url: str, provider: CountingProvider, tmp_path: Path
) -> None:
    """submit FILE --config (cluster) enqueues without HTTP; every line gets one result.

    A second run of the same file finds the ids done and makes no provider call.
    """
    workers = await _start(tmp_path, pg_url, provider, 2)
    tasks = tmp_path / "tasks.jsonl"
    lines = [f'{{"id": "t{i}", "prompt": "t{i}"}}' for i in range(120)]
    lines.insert(5, '{"prompt": 7}')
    tasks.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "RUNNER_DATABASE_URL": pg_url}
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "runner", "submit", str(tasks), "--config"]
    cmd += [str(workers[0].config), "--out", str(out), "--no-progress"]
    try:
        first = await anyio.run_process(cmd, env=env, check=False)
        assert out.exists(), first.stderr.decode()
        results = [json.loads(line) for line in out.read_text().splitlines()]
        calls = sum(provider.calls.values())
        second = await anyio.run_process(cmd, env=env, check=False)
        again = [json.loads(line) for line in out.read_text().splitlines()]
        reused = tmp_path / "reused.jsonl"
        reused.write_text('{"id": "t0", "prompt": "something else"}\n')
        cmd[4] = str(reused)
        third = await anyio.run_process(cmd, env=env, check=False)
        (conflict,) = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        await _stop_all(workers)
    assert first.returncode == 1, first.stderr.decode()  # the bad line is rejected
    assert len(results) == 121
    by_status = Counter(r["status"] for r in results)
    assert by_status == {"completed": 120, "rejected": 1}
    assert {r["id"] for r in results if r["status"] == "completed"} == {f"t{i}" for i in range(120)}
    assert second.returncode == 1
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in results)
    assert sum(provider.calls.values()) == calls
    assert third.returncode == 1
    assert conflict["status"] == "rejected"
    assert conflict["error"]["code"] == "id_conflict"


async def test_database_outage_mid_run_loses_nothing(
    provider: CountingProvider, tmp_path: Path
) -> None:
    """The database refuses every connection for a few seconds mid-run; the run completes.

    The workers connect as a role of their own, so the outage can be made
    real for them alone: ``CONNECTION LIMIT 0`` on their database and every
    connection ended, then lifted (superusers, and so the test, are exempt).
    Meanwhile ``/healthz`` says the journal is failing.
    """
    from tests.pg_support import admin_execute, server_url, with_database

    tag = uuid.uuid4().hex[:10]
    role, name = f"runner_role_{tag}", f"runner_test_{tag}"
    await admin_execute(f'CREATE ROLE "{role}" LOGIN')
    await admin_execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
    url = with_database(server_url(), name)
    parts = urlsplit(url)
    netloc = f"{role}@{parts.hostname}:{parts.port or 5432}"
    worker_url = urlunsplit(parts._replace(netloc=netloc))
    n = 200
    try:
        workers = await _start(tmp_path, worker_url, provider, 2)
        try:
            async with aiohttp.ClientSession() as s:
                for k in range(0, n, 10):
                    await post_jsonl(
                        s,
                        workers[(k // 10) % 2].url,
                        [{"id": f"t{i}", "prompt": f"t{i}"} for i in range(k, k + 10)],
                    )
                await admin_execute(f'ALTER DATABASE "{name}" CONNECTION LIMIT 0')
                await terminate_backends(url)

                async def failing() -> bool:
                    async with s.get(f"{workers[0].url}/healthz") as r:
                        return bool((await r.json())["journal"] == "failing")

                await eventually(failing, 10)
                await anyio.sleep(2)
                await admin_execute(f'ALTER DATABASE "{name}" CONNECTION LIMIT -1')
                found = await _wait_done(url, n)
        finally:
            codes = await stop_all(workers)
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_execute(f'DROP ROLE IF EXISTS "{role}"')
    assert {status for status, _ in found.values()} == {"completed"}
    assert len(found) == n
    assert codes == [0, 0]
