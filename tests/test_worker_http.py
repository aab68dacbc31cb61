"""The worker's listening side: head and body timeouts, the connection cap, JSON errors.

These go through :func:`runner.service._http.serve` on 127.0.0.1 with raw
sockets, so malformed and half-sent requests reach the server exactly as
written.  Timeouts are a fraction of a second; the assertions are about what
the server does (close, answer), never about how fast.  asyncio only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream

from runner.metrics import MemorySink
from runner.service._http import Limits, Reports, serve
from runner.service._journal import open_journal
from runner.service._prometheus import PrometheusTee
from runner.service._server import make_app
from runner.service._worker import Worker
from tests.worker_support import FakeRunner, Lines

pytestmark = pytest.mark.anyio

#: Long enough that a test never waits it out by accident.
PATIENCE = 10.0


class Served:
    def __init__(self, port: int, lines: Lines, worker: Worker, runner: FakeRunner) -> None:
        self.port = port
        self.lines = lines
        self.worker = worker
        self.runner = runner

    async def connect(self) -> SocketStream:
        return await anyio.connect_tcp("127.0.0.1", self.port)


@asynccontextmanager
async def _serving(tmp_path: Path, limits: Limits) -> AsyncIterator[Served]:
    lines = Lines()
    reports = Reports(lines.append)
    runner = FakeRunner(auto=False)
    async with (
        open_journal(str(tmp_path / "journal.db")) as journal,
        anyio.create_task_group() as tg,
    ):
        worker = Worker(journal, queue_size=10)
        await tg.start(worker.run, runner)
        app = make_app(
            worker,
            PrometheusTee(MemorySink()),
            known_workflows={"default"},
            auth_token=None,
            max_request_bytes=1 << 20,
            reports=reports,
            body_timeout=limits.body_timeout,
        )
        async with serve(app, "127.0.0.1", 0, limits=limits, reports=reports) as url:
            yield Served(int(url.rsplit(":", 1)[1]), lines, worker, runner)
        await runner.shutdown()
        worker.close()


async def _read_until_closed(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks: list[bytes] = []
    with anyio.fail_after(PATIENCE):
        while True:
            try:
                chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return b"".join(chunks)


async def _read_answer(stream: SocketStream) -> bytes:
    """One whole answer (head and Content-Length bytes of body), closed or not."""
    raw = b""
    with anyio.fail_after(PATIENCE):
        while True:
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                length = _answer(head + sep)[1].get("content-length")
                if length is not None and len(body) >= int(length):
                    return raw
            try:
                raw += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return raw


def _answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, msgspec.json.decode(body) if body else None


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n"


async def test_a_connection_without_a_whole_request_head_is_closed(tmp_path: Path) -> None:
    """Half a head, nothing at all, or idling after an answer: closed after head_timeout."""
    async with _serving(tmp_path, Limits(head_timeout=0.2)) as srv:
        half, silent, idle = await srv.connect(), await srv.connect(), await srv.connect()
        await half.send(b"POST /v1/tasks HTTP/1.1\r\nHost: w\r\n")
        await idle.send(b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n")  # keep-alive
        for stream in (half, silent):
            assert await _read_until_closed(stream) == b""
        status, _, body = _answer(await _read_until_closed(idle))
        assert (status, body["status"]) == (200, "ok")
        for stream in (half, silent, idle):
            await stream.aclose()


async def test_a_body_that_does_not_arrive_in_time_gets_a_json_408(tmp_path: Path) -> None:
    """A POST whose body trickles past body_timeout is answered 408 and the connection closed."""
    async with (
        _serving(tmp_path, Limits(body_timeout=0.2)) as srv,
        await srv.connect() as stream,
    ):
        await stream.send(
            b"POST /v1/tasks HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"prompt": '
        )
        status, headers, body = _answer(await _read_until_closed(stream))
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    assert body == {
        "error": "request_timeout",
        "message": "the request body did not arrive within 0.2 s (worker.body_timeout);"
        " send it faster or in smaller batches",
    }


async def test_past_the_cap_the_oldest_idle_connection_makes_room(tmp_path: Path) -> None:
    """With max_connections held by silent clients, /healthz still answers; the oldest goes."""
    async with _serving(tmp_path, Limits(max_connections=4)) as srv:
        silent = [await srv.connect() for _ in range(4)]

        async def healthz() -> None:
            async with await srv.connect() as stream:
                await stream.send(GET_HEALTHZ)
                status, _, body = _answer(await _read_until_closed(stream))
                assert (status, body["status"]) == (200, "ok")

        await healthz()
        assert await _read_until_closed(silent[0]) == b""
        silent += [await srv.connect(), await srv.connect()]  # the fifth open one evicts silent[1]
        await healthz()  # and this one silent[2]
        for stream in silent[1:3]:
            assert await _read_until_closed(stream) == b""
        assert srv.lines == [
            "4 connections open (worker.max_connections): closing the oldest that are idle"
            " or have not sent a whole request"
        ]
        for stream in silent:
            await stream.aclose()


async def test_when_every_connection_is_inside_a_handler_a_new_one_is_closed(
    tmp_path: Path,
) -> None:
    """Connections busy in a handler (long polls) are never evicted; the newcomer is refused."""
    async with _serving(tmp_path, Limits(max_connections=2)) as srv:
        await srv.worker.accept([_task("held")])
        polls = [await srv.connect() for _ in range(2)]
        for stream in polls:
            await stream.send(b"GET /v1/tasks/held?wait=30 HTTP/1.1\r\nHost: w\r\n\r\n")
        await anyio.sleep(0.1)  # let both handlers start
        async with await srv.connect() as stream:
            await stream.send(GET_HEALTHZ)
            assert await _read_until_closed(stream) == b""
        srv.runner.handles["held"].finish()
        for stream in polls:
            status, _, body = _answer(await _read_answer(stream))
            assert (status, body["status"]) == (200, "completed")
            await stream.aclose()


async def test_malformed_http_gets_a_json_400_and_one_report_line(tmp_path: Path) -> None:
    """aiohttp's own 400 is JSON like every error; the log gets one line, not a traceback each."""
    async with _serving(tmp_path, Limits()) as srv:
        for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
            async with await srv.connect() as stream:
                await stream.send(garbage)
                status, headers, body = _answer(await _read_until_closed(stream))
            assert status == 400
            assert headers["content-type"].startswith("application/json")
            assert body["error"] == "bad_request"
            assert body["message"].startswith("the request is not valid HTTP/1.1 (")
        assert len(srv.lines) == 1
        assert srv.lines[0].startswith("answered 400 to malformed HTTP: ")


async def test_accept_failures_are_reported_once_per_interval(tmp_path: Path) -> None:
    """EMFILE on accept (the event loop retries it often) makes one line, not one per attempt."""
    async with _serving(tmp_path, Limits()) as srv:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )
        assert srv.lines == [
            "cannot accept connections: Too many open files; raise the open-files limit"
            " (ulimit -n) or lower worker.max_connections"
        ]
        async with await srv.connect() as stream:
            await stream.send(GET_HEALTHZ)
            assert _answer(await _read_until_closed(stream))[0] == 200


def _task(task_id: str) -> Any:
    from runner._task import Task

    return Task(id=task_id, prompt="p")


async def test_leaving_serve_closes_every_connection(tmp_path: Path) -> None:
    """On exit, idle, half-sent and keep-alive connections are all closed, not left hanging."""
    async with _serving(tmp_path, Limits()) as srv:
        silent, half, kept = await srv.connect(), await srv.connect(), await srv.connect()
        await half.send(b"GET /healthz HTTP/1.1\r\nHost: w\r\n")
        await kept.send(b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n")
        assert _answer(await _read_answer(kept))[0] == 200
    for stream in (silent, half, kept):
        assert await _read_until_closed(stream) == b""
        await stream.aclose()


def test_reports_say_each_kind_once_per_interval_with_the_count_held_back() -> None:
    """A second line of a kind within the interval is held; the next one says how many were."""
    now = [0.0]
    lines = Lines()
    reports = Reports(lines.append, interval=60.0, clock=lambda: now[0])
    for _ in range(3):
        reports.report("accept", "cannot accept")
    reports.report("cap", "cap reached")
    now[0] = 61.0
    reports.report("accept", "cannot accept")
    assert lines == [
        "cannot accept",
        "cap reached",
        "cannot accept (2 more like this since the last report)",
    ]
