"""Worker processes on one cluster database, and a provider that counts their calls.

:class:`CountingProvider` is an OpenAI-compatible server on loopback that
answers after ``delay`` seconds and counts calls per task (the prompt is the
task id) and calls open per worker (the ``X-Worker`` header each worker's
config sends), so a test can tell how many provider calls were repeated.
A prompt ``sleep:S`` holds its answer for S seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
import anyio.abc
from aiohttp import web

from tests.fakes.openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


class CountingProvider(FakeOpenAI):
    """Counts calls per prompt and open calls per worker; answers after ``delay``."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__(api_key=None)
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self.fail = False

    def routes(self) -> list[web.RouteDef]:
        async def generate(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            prompt = body["messages"][-1]["content"]
            worker = request.headers.get("X-Worker", "")
            self.calls[prompt] += 1
            self.open[worker] += 1
            try:
                if self.fail:
                    return web.json_response(
                        {"error": {"message": "down", "type": "server_error"}}, status=500
                    )
                delay = float(prompt[6:]) if prompt.startswith("sleep:") else self.delay
                await asyncio.sleep(delay)
                return web.json_response(self.completion(f"done {prompt}").json)
            finally:
                self.open[worker] -= 1

        return [web.post("/v1/chat/completions", generate)]

    def repeated(self) -> int:
        """Calls beyond the first, over every task."""
        return sum(n - 1 for n in self.calls.values() if n > 1)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Wait until ``check()`` is true: state in another process or the database,
    which nothing in this process can be woken by."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - the state lives in another process
            await anyio.sleep(0.05)


def cluster_config(
    tmp: Path,
    name: str,
    provider: CountingProvider,
    *,
    concurrency: int = 10,
    lease: str = "2s",
    extra: str = "",
) -> Path:
    """A worker's config: the same cluster, its own X-Worker header and spill path."""
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""\
version: 1
providers:
  - id: fake
    type: openai
    model: gpt-4.1-mini
    base_url: {provider.base_url}
    timeout: 30s
    max_concurrency: 1000
    headers: {{X-Worker: {name}}}
default_provider: fake
concurrency: {concurrency}
grace_period: 5s
retry: {{max_attempts: 2, initial_delay: 0.05, jitter: 0}}
metrics: {{path: {tmp / name / "metrics.db"}}}
logging: {{level: warning}}
worker: {{port: 0}}
cluster:
  database: ${{RUNNER_DATABASE_URL}}
  lease: {lease}
{extra}"""
    )
    return path


class WorkerProcess:
    """``python -m runner worker`` in cluster mode, with its stderr in a file."""

    def __init__(self, config: Path, url: str, log: Path) -> None:
        self.config = config
        self.db_url = url
        self.log = log
        self.proc: anyio.abc.Process | None = None
        self.url = ""

    async def start(self, listen_within: float = 30) -> WorkerProcess:
        """Start the worker and wait for its ``listening on`` line.

        A worker that does not listen within ``listen_within`` seconds is killed
        before the failure is raised, so no process outlives the test.
        """
        offset = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        try:
            self.proc = await anyio.open_process(
                [sys.executable, "-m", "runner", "worker", "--config", str(self.config)],
                cwd=ROOT,
                stdout=out,
                stderr=out,
                env={**os.environ, "RUNNER_DATABASE_URL": self.db_url},
            )
        finally:
            out.close()
        deadline = time.monotonic() + listen_within
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:]
            found = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", text)
            if found:
                self.url = found[1].decode()
                return self
            if self.proc.returncode is not None:
                break
            await anyio.sleep(0.05)
        if self.proc.returncode is None:
            await self.kill()
        raise AssertionError(f"worker did not start:\n{self.log.read_text()}")

    async def kill(self) -> None:
        """SIGKILL: no drain, no release; its leases must run out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; 0 if it never started.

        A worker still running 30 s after SIGTERM is killed, then the
        failure raised, so no process outlives the test.
        """
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with anyio.move_on_after(30):
                await self.proc.wait()
            if self.proc.returncode is None:
                await self.kill()
                raise AssertionError(f"worker ignored SIGTERM for 30 s:\n{self.log.read_text()}")
        return self.proc.returncode or 0


class Stoppable(Protocol):
    async def stop(self) -> int: ...


async def stop_all(workers: Iterable[Stoppable]) -> list[int]:
    """Stop every worker, even after one's stop() raised: the exit codes, or the first error.

    Each stop() sends its SIGTERM before it first waits, so even under
    cancellation every worker is told to stop.
    """
    codes: list[int] = []
    first: BaseException | None = None
    for worker in workers:
        try:
            codes.append(await worker.stop())
        except BaseException as exc:  # the first is raised once every worker is stopped
            first = first or exc
    if first is not None:
        raise first
    return codes


async def post_jsonl(
    session: aiohttp.ClientSession, url: str, tasks: list[dict[str, Any]]
) -> dict[str, Any]:
    body = "\n".join(json.dumps(t) for t in tasks).encode()
    for _ in range(100):
        async with session.post(
            f"{url}/v1/tasks", data=body, headers={"Content-Type": "application/x-ndjson"}
        ) as r:
            if r.status == 503:
                await anyio.sleep(0.1)
                continue
            assert r.status == 202, await r.text()
            data: dict[str, Any] = await r.json()
            return data
    raise AssertionError("the queue stayed full")
