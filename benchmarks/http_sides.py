"""The clients the ``http`` case compares, each run in a process of its own.

``python -m benchmarks.http_sides --side NAME --port P --scratch DIR`` builds
one side, prints ``ready``, then answers each ``run N`` line on stdin with
one JSON line: the wall seconds and this process's CPU seconds of a pass of
``N`` requests (or ``{"error": ...}``).  End of input ends it.  Every pass
sends ``N`` completion requests through ``CONCURRENCY`` concurrent callers to
the local server of :mod:`benchmarks.http_server` and checks every answer;
a pass with a wrong answer is an error, not a figure.

What each side does per pass (the clock covers all of it):

* ``raw-WIRE``, the hand-written baseline: one ``aiohttp.ClientSession`` (a
  pool of ``CONCURRENCY`` connections, the request headers runner's adapter
  sends), ``POST`` of a msgspec-encoded body, ``read()``,
  ``msgspec.json.decode``, the answer read out of the JSON.  Nothing else.
  runner's adapters do not use aiohttp, so this is not runner's floor
  (``capacity`` is).
* ``runner-WIRE``: runner through its public API only (``Runner.from_config``
  on a YAML file, ``run_many``): one provider of that type at the server's
  ``base_url``, config ``concurrency`` 64, the provider's ``max_concurrency``
  64 (its limiter cannot bind), **SQLite metrics on** (a fresh database per
  pass; opening it and the final flush are on the clock), the execution log
  at ``warning`` (no line per task) to ``/dev/null``.  Besides the request,
  runner keeps each task's status history, builds one metric event per
  attempt and writes it, and builds a Result.
* ``sdk-openai``: the official ``openai`` SDK, a new ``AsyncOpenAI`` per pass
  with ``base_url`` and a dummy key, ``chat.completions.create``; it writes
  no metrics and no log.
* ``litellm-openai``: ``litellm.Router`` with one deployment
  ``openai/bench-model`` at the server (``api_base``), real HTTP, callbacks
  and telemetry off; built once per process (it keeps its clients); writes
  no metrics and no log.  After each pass it gets 0.5 s, untimed, to finish
  its background work, so that work never runs on another side's clock.
* ``capacity``: the server's ceiling and every client's floor, a bare
  asyncio protocol client (64 keep-alive connections, pre-encoded request,
  responses framed by ``Content-Length`` and not decoded).

The sides never retry: the server count the case reads after each pass must
grow by exactly ``N``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from benchmarks.http_wire import (
    ANSWER,
    DUMMY_KEY,
    MODEL,
    Wire,
    answer_text,
    base_url,
    endpoint,
    headers,
    prompt,
    request_body,
)

CONCURRENCY: Final = 64

#: Side name -> what it is, for the notes.
SIDES: Final[dict[str, str]] = {
    "capacity": "bare asyncio client, no decode",
    "raw-openai": "raw aiohttp",
    "runner-openai": "runner",
    "sdk-openai": "openai SDK",
    "litellm-openai": "litellm Router",
    "raw-anthropic": "raw aiohttp",
    "runner-anthropic": "runner",
    "raw-gemini": "raw aiohttp",
    "runner-gemini": "runner",
}

#: runner's provider type for each wire.
RUNNER_TYPES: Final[dict[Wire, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
}


async def pool(count: int, call: Callable[[int], Awaitable[None]]) -> None:
    """Make ``count`` calls (0..count-1) through ``CONCURRENCY`` concurrent callers."""
    todo: Iterator[int] = iter(range(count))

    async def caller() -> None:
        for i in todo:
            await call(i)

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(CONCURRENCY, count)):
            tg.create_task(caller())


class Side:
    """One client: ``prepare`` (untimed), ``run`` (timed), ``settle`` (untimed)."""

    async def prepare(self, count: int) -> None:
        return None

    async def run(self, count: int) -> None:
        raise NotImplementedError

    async def settle(self) -> None:
        return None


class RawAiohttp(Side):
    """The hand-written baseline: one ClientSession, POST, read, decode."""

    def __init__(self, wire: Wire, port: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._wire = wire
        self._url = endpoint(wire, port)
        self._headers = headers(wire)

    async def run(self, count: int) -> None:
        aiohttp = self._aiohttp
        wire, url = self._wire, self._url
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector, headers=self._headers) as session:

            async def call(i: int) -> None:
                body = msgspec.json.encode(request_body(wire, i))
                async with session.post(url, data=body) as response:
                    raw = await response.read()
                    status = response.status
                if status != 200 or answer_text(wire, msgspec.json.decode(raw)) != ANSWER:
                    raise RuntimeError(f"request {i}: HTTP {status}, {raw[:200]!r}")

            await pool(count, call)


RUNNER_CONFIG: Final = """\
version: 1
providers:
  - id: bench-{wire}
    type: {type}
    model: {model}
    api_key: {key}
    base_url: {base_url}
    timeout: 60s
    max_concurrency: {concurrency}
roles:
  coder: {{provider: bench-{wire}}}
default_provider: bench-{wire}
concurrency: {concurrency}
metrics: {{store: sqlite, path: "{db}"}}
logging: {{level: warning, format: json}}
"""


class RunnerSide(Side):
    """runner's public API: ``Runner.from_config(path)`` and ``run_many``."""

    def __init__(self, wire: Wire, port: int, scratch: str) -> None:
        from runner import Runner, Task

        self._runner_class = Runner
        self._task_class = Task
        self._wire = wire
        self._port = port
        self._scratch = scratch
        self._passes = 0
        self._runner: Any = None
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)

    def config_path(self) -> Path:
        """A config with a fresh metrics database for the next pass."""
        self._passes += 1
        path = Path(self._scratch, f"http-runner-{self._wire}-{os.getpid()}-{self._passes}.yaml")
        path.write_text(
            RUNNER_CONFIG.format(
                wire=self._wire,
                type=RUNNER_TYPES[self._wire],
                model=MODEL,
                key=DUMMY_KEY,
                base_url=base_url(self._wire, self._port),
                concurrency=CONCURRENCY,
                db=path.with_suffix(".db"),
            )
        )
        return path

    async def prepare(self, count: int) -> None:
        # Parsing the YAML is not per-task work; opening the runner is, and is timed.
        self._runner = self._runner_class.from_config(self.config_path(), log_stream=self._devnull)

    async def run(self, count: int) -> None:
        task = self._task_class
        tasks = (task(id=f"t-{i}", role="coder", prompt=prompt(i)) for i in range(count))
        completed = 0
        failures: dict[str, int] = {}
        async with self._runner as runner:
            async for result in runner.run_many(tasks):
                if result.status == "completed" and result.output == ANSWER:
                    completed += 1
                else:
                    why = result.error.code if result.error else result.status
                    failures[why] = failures.get(why, 0) + 1
        self._runner = None
        if completed != count:
            raise RuntimeError(f"{completed} of {count} tasks completed; others: {failures}")


class OpenAISdk(Side):
    """The official SDK: ``AsyncOpenAI(base_url=...)``, ``chat.completions.create``."""

    def __init__(self, port: int) -> None:
        from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]

        self._client_class = AsyncOpenAI
        self._base_url = base_url("openai", port)

    async def run(self, count: int) -> None:
        client = self._client_class(api_key=DUMMY_KEY, base_url=self._base_url)
        try:

            async def call(i: int) -> None:
                reply = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt(i)}]
                )
                if reply.choices[0].message.content != ANSWER:
                    raise RuntimeError(f"request {i}: {reply!r}")

            await pool(count, call)
        finally:
            await client.close()


class LiteLLMRouter(Side):
    """``litellm.Router`` over one ``openai/`` deployment at the server: real HTTP."""

    def __init__(self, port: int) -> None:
        from benchmarks.litellm_compare import import_litellm

        litellm = import_litellm()
        self._router = litellm.Router(
            model_list=[
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": f"openai/{MODEL}",
                        "api_base": base_url("openai", port),
                        "api_key": DUMMY_KEY,
                    },
                }
            ]
        )

    async def run(self, count: int) -> None:
        router = self._router

        async def call(i: int) -> None:
            reply = await router.acompletion(
                model=MODEL, messages=[{"role": "user", "content": prompt(i)}]
            )
            if reply.choices[0].message.content != ANSWER:
                raise RuntimeError(f"request {i}: {reply!r}")

        await pool(count, call)

    async def settle(self) -> None:
        # LiteLLM finishes its logging in background tasks and threads after
        # each call returns; let them run now, before the next side's clock.
        await asyncio.sleep(0.5)


class _Ping(asyncio.Protocol):
    """One keep-alive connection sending the same request after each full answer."""

    def __init__(self, request: bytes, todo: Iterator[int], done: asyncio.Future[None]) -> None:
        self._request = request
        self._todo = todo
        self._done = done
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._next()

    def _next(self) -> None:
        assert self._transport is not None
        if next(self._todo, None) is None:
            self._transport.close()
            if not self._done.done():
                self._done.set_result(None)
        else:
            self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            if not head.startswith(b"HTTP/1.1 200 "):
                self._fail(RuntimeError(f"unexpected answer {head[:80]!r}"))
                return
            marker = head.lower().find(b"content-length:")
            length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(buf) < end + 4 + length:
                return
            del buf[: end + 4 + length]
            self.answered += 1
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)


class Capacity(Side):
    """The server's ceiling: the cheapest client there is, so the server is what is timed."""

    def __init__(self, port: int) -> None:
        self._port = port
        body = msgspec.json.encode(request_body("openai", 0))
        head = [
            b"POST /v1/chat/completions HTTP/1.1",
            f"Host: 127.0.0.1:{port}".encode(),
            *(f"{k}: {v}".encode() for k, v in headers("openai").items()),
            f"Content-Length: {len(body)}".encode(),
        ]
        self._request = b"\r\n".join(head) + b"\r\n\r\n" + body

    async def run(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        todo: Iterator[int] = iter(range(count))
        waits: list[asyncio.Future[None]] = []
        protocols: list[_Ping] = []
        for _ in range(min(CONCURRENCY, count)):
            done: asyncio.Future[None] = loop.create_future()
            _, protocol = await loop.create_connection(
                functools.partial(_Ping, self._request, todo, done), "127.0.0.1", self._port
            )
            waits.append(done)
            protocols.append(protocol)
        await asyncio.wait_for(asyncio.gather(*waits), timeout=60 + count * 0.01)
        answered = sum(p.answered for p in protocols)
        if answered != count:
            raise RuntimeError(f"{answered} of {count} requests answered")


def make_side(name: str, port: int, scratch: str) -> Side:
    """Build the side called ``name`` (its imports happen here, before ``ready``)."""
    if name == "capacity":
        return Capacity(port)
    kind, _, wire_name = name.partition("-")
    wire: Wire
    if wire_name == "openai":
        wire = "openai"
    elif wire_name == "anthropic":
        wire = "anthropic"
    elif wire_name == "gemini":
        wire = "gemini"
    else:
        raise ValueError(f"no side {name!r}")
    if kind == "raw":
        return RawAiohttp(wire, port)
    if kind == "runner":
        return RunnerSide(wire, port, scratch)
    if name == "sdk-openai":
        return OpenAISdk(port)
    if name == "litellm-openai":
        return LiteLLMRouter(port)
    raise ValueError(f"no side {name!r}")


async def timed_pass(side: Side, count: int) -> dict[str, float]:
    """One pass: prepare, collect garbage, then the timed run; wall and CPU seconds."""
    await side.prepare(count)
    gc.collect()
    cpu = time.process_time()
    started = time.perf_counter()
    await side.run(count)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await side.settle()
    gc.collect()
    return {"seconds": seconds, "cpu": cpu}


async def serve(name: str, port: int, scratch: str) -> None:
    """Build the side, say ``ready``, then run a pass per ``run N`` line until EOF."""
    side = make_side(name, port, scratch)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        command, _, count = line.decode().partition(" ")
        if command != "run":
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
            continue
        try:
            answer: dict[str, object] = dict(await timed_pass(side, int(count)))
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_sides")
    parser.add_argument("--side", required=True, choices=list(SIDES))
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--scratch", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.side, args.port, args.scratch))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
