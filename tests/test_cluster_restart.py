"""A real PostgreSQL restart in the middle of a cluster run (asyncio only).

The workers run against a private server (tests/pg_private.py), never the
shared one, which the test restarts with ``pg_ctl restart -m fast`` while
tasks are running: every session is ended, the server goes down and comes
back.  The workers must reconnect and finish the run: every id ends with
exactly one terminal result, and provider calls are repeated only for tasks
whose lease ran out meanwhile.
"""

from __future__ import annotations

import re
from pathlib import Path

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
from tests.pg_private import private_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _done(url: str) -> dict[str, tuple[str, bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, status, result IS NOT NULL AS done FROM runner_tasks")
    finally:
        await conn.close()
    return {r["id"]: (r["status"], r["done"]) for r in rows}


async def _finished_here(session: aiohttp.ClientSession, url: str) -> int:
    """The terminal results this worker wrote (``runner_tasks_finished_total``, all statuses)."""
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    return sum(
        int(float(n)) for n in re.findall(r"^runner_tasks_finished_total\{.*\} (\S+)$", text, re.M)
    )


async def test_a_real_database_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    """pg_ctl restart -m fast while two workers run 300 tasks: the run completes, once per id."""
    n = 300
    async with private_server() as server, CountingProvider(delay=0.2) as provider:
        workers = [
            WorkerProcess(
                cluster_config(tmp_path, f"w{i}", provider), server.url, tmp_path / f"w{i}.log"
            )
            for i in range(2)
        ]
        codes: list[int] = []
        try:
            # Inside the try: a worker that started is stopped even when the
            # other did not, so none outlives the private server.
            async with anyio.create_task_group() as tg:
                for w in workers:
                    tg.start_soon(w.start)
            async with aiohttp.ClientSession() as s:
                for k in range(0, n, 10):
                    await post_jsonl(
                        s,
                        workers[(k // 10) % 2].url,
                        [{"id": f"t{i}", "prompt": f"t{i}"} for i in range(k, k + 10)],
                    )

                async def some_done() -> bool:
                    return sum(done for _, done in (await _done(server.url)).values()) >= n // 5

                await eventually(some_done, 30)
                before = sum(done for _, done in (await _done(server.url)).values())
                await server.restart()

                found: dict[str, tuple[str, bool]] = {}

                async def all_done() -> bool:
                    nonlocal found
                    found = await _done(server.url)
                    return len(found) == n and all(done for _, done in found.values())

                await eventually(all_done, 60)
                written = [await _finished_here(s, w.url) for w in workers]
                conn = await asyncpg.connect(server.url)
                try:
                    reclaimed = await conn.fetchval(
                        "SELECT count(*) FROM runner_tasks WHERE claims > 1"
                    )
                    after_restart = await conn.fetchval(
                        "SELECT count(*) FROM runner_tasks"
                        " WHERE finished_at > pg_postmaster_start_time()"
                    )
                finally:
                    await conn.close()
        finally:
            codes = await stop_all(workers)
        logs = "".join(w.log.read_text() for w in workers)
    # The restart came mid-run, with results written on both sides of it.
    assert n // 5 <= before < n, before
    assert after_restart > 0
    assert sorted(found) == sorted(f"t{i}" for i in range(n))
    assert {status for status, _ in found.values()} == {"completed"}
    # Exactly one terminal write per id across the workers (each write is
    # conditional on the lease, so a task that ran twice is written once).
    assert sum(written) == n, (written, logs[-3000:])
    assert provider.repeated() <= reclaimed, (provider.repeated(), reclaimed)
    assert codes == [0, 0], logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
