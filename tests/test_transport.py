"""The providers' HTTP/1.1 transport (workers._transport) against a raw loopback server.

Framing (Content-Length, chunked, read-to-close), decoding (gzip, deflate),
the keep-alive pool (limit, reuse, what is never reused, idle expiry, a
connection the server closed), cancellation, aclose, TLS, and the request
bytes.  The transport runs on asyncio only, so this module does too.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import gc
import gzip
import os
import socket
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.transport_support import (
    JSON_OK,
    Answer,
    Certificates,
    RawServer,
    chunked,
    make_certificates,
    response,
)
from workers import ProviderError, Secret
from workers._factory import open_provider
from workers._settings import ProviderConfig
from workers._transport import (
    USER_AGENT,
    BadResponse,
    ConnectFailed,
    Disconnected,
    InvalidHeader,
    InvalidURL,
    Transport,
    _parse,
)

pytestmark = pytest.mark.anyio

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-secret-0123456789"}


def transport(limit: int = 4, **kwargs: object) -> Transport:
    return Transport(HEADERS, limit=limit, **kwargs)  # type: ignore[arg-type]


async def wait_until_idle_count(t: Transport, open_count: int, limit: float = 5.0) -> None:
    """Wait (bounded) until the transport holds ``open_count`` open connections."""
    with anyio.move_on_after(limit):
        while t.statistics().open != open_count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.005)
    assert t.statistics().open == open_count


# Framing and decoding.


async def test_content_length_response_is_read_whole() -> None:
    """A Content-Length body comes back whole, with its status and headers."""
    async with RawServer() as server:
        server.script(response(b'{"a": 1}', status="201 Created", headers=("X-Request-Id: r-7",)))
        t = transport()
        try:
            reply = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert (reply.status, reply.body) == (201, b'{"a": 1}')
    assert reply.headers["x-request-id"] == "r-7"


async def test_chunked_response_is_joined() -> None:
    """A chunked body arrives joined, and the connection is kept for the next request."""
    async with RawServer() as server:
        server.script(chunked(b'{"text": "hel', b'lo"}', b" "))
        t = transport()
        try:
            reply = await t.request("POST", server.url(), body=b"{}")
            again = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert reply.body == b'{"text": "hello"} '
    assert again.body == JSON_OK
    assert server.connections == 1


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
async def test_compressed_bodies_are_decoded(encoding: str, encode: object) -> None:
    """gzip and deflate (zlib-wrapped or raw) bodies are decoded; the request asks for both."""
    body = b'{"text": "' + b"squeeze " * 200 + b'"}'
    async with RawServer() as server:
        packed = encode(body)  # type: ignore[operator]
        server.script(response(packed, headers=(f"Content-Encoding: {encoding}",)))
        t = transport()
        try:
            reply = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert reply.body == body
    assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"


async def test_gzip_and_chunked_together() -> None:
    """A gzip body sent in chunks is joined, then decoded."""
    packed = gzip.compress(JSON_OK * 50)
    async with RawServer() as server:
        server.script(chunked(packed[:10], packed[10:], headers=("Content-Encoding: gzip",)))
        t = transport()
        try:
            reply = await t.request("GET", server.url())
        finally:
            await t.aclose()
    assert reply.body == JSON_OK * 50


async def test_read_to_close_body_ends_with_the_connection() -> None:
    """A body with no length ends when the server closes; that connection is not reused."""
    async with RawServer() as server:
        server.script(
            Answer(response(b'{"whole": "body"}', length=False), close=True),
            response(),
        )
        t = transport()
        try:
            reply = await t.request("POST", server.url(), body=b"{}")
            again = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert reply.body == b'{"whole": "body"}'
    assert again.body == JSON_OK
    assert [s.connection for s in server.seen] == [1, 2]


async def test_interim_100_continue_is_skipped() -> None:
    """A 100 Continue before the answer is passed over."""
    async with RawServer() as server:
        server.script(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b'{"late": 1}'))
        t = transport()
        try:
            reply = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert (reply.status, reply.body) == (200, b'{"late": 1}')


async def test_response_headers_are_case_insensitive_and_repeats_joined() -> None:
    """Headers are found in any case; a repeated header's values are joined."""
    async with RawServer() as server:
        server.script(
            response(headers=("Retry-After: 3", "X-Should-Retry: false", "Via: a", "VIA: b"))
        )
        t = transport()
        try:
            headers = (await t.request("GET", server.url())).headers
        finally:
            await t.aclose()
    assert headers["retry-after"] == "3"
    assert headers.get("RETRY-AFTER") == "3"
    assert headers["x-should-retry"] == "false"
    assert headers["via"] == "a, b"
    assert "content-length" in headers


# Failures.


@pytest.mark.parametrize(
    ("data", "stage", "status"),
    [
        (b"", "answer", None),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "head", None),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut', "body", 200),
        (b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "body", 502),
    ],
    ids=["no answer", "cut in the head", "cut in a sized body", "cut in a chunked body"],
)
async def test_a_response_cut_short_says_how_far_it_got(
    data: bytes, stage: str, status: int | None
) -> None:
    """A connection closed mid-response is Disconnected with the stage (and status) reached."""
    async with RawServer() as server:
        server.script(Answer(data, close=True))
        t = transport()
        try:
            with pytest.raises(Disconnected) as caught:
                await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert (caught.value.stage, caught.value.status) == (stage, status)
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        response(b"not gzip at all", headers=("Content-Encoding: gzip",)),
        response(b"{}", headers=("Content-Encoding: br",)),
    ],
    ids=["not HTTP", "bad length", "bad gzip", "unknown encoding"],
)
async def test_invalid_responses_are_bad_responses(data: bytes) -> None:
    """Bytes that are not HTTP, or a body that cannot be decoded, are a BadResponse."""
    async with RawServer() as server:
        server.script(data)
        t = transport()
        try:
            with pytest.raises(BadResponse):
                await t.request("POST", server.url(), body=b"{}")
            assert t.statistics().idle == 0
        finally:
            await t.aclose()


async def test_a_101_upgrade_is_a_bad_response_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 101 Switching Protocols is a BadResponse naming it; asyncio logs no fatal error."""
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with RawServer() as server:
        server.script(upgrade)
        t = transport()
        try:
            with pytest.raises(BadResponse) as caught:
                await t.request("POST", server.url(), body=b"{}")
            assert t.statistics().idle == 0
        finally:
            await t.aclose()
    assert str(caught.value) == "a 101 Switching Protocols answer: runner does not switch protocols"
    assert caught.value.status == 101
    assert "Fatal error" not in caplog.text


async def test_refused_connection_names_host_and_port() -> None:
    """Nothing listening: ConnectFailed, 'connection refused', with the host and port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = transport()
    try:
        with pytest.raises(ConnectFailed) as caught:
            await t.request("GET", f"http://127.0.0.1:{port}/v1/models")
    finally:
        await t.aclose()
    assert str(caught.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "localhost:11434/v1/models",
            "the scheme is 'localhost'; the URL must start with http:// or https://",
        ),
        ("ftp://host/v1", "the scheme is 'ftp'; the URL must start with http:// or https://"),
        ("//host/v1", "it has no scheme; the URL must start with http:// or https://"),
        ("http:///v1", "it names no host"),
        ("http://host:99999/v1", "Port out of range 0-65535"),
    ],
)
async def test_invalid_urls_are_refused_before_connecting(url: str, reason: str) -> None:
    """A URL that is not absolute http(s) with a host and a valid port is InvalidURL."""
    t = transport()
    with pytest.raises(InvalidURL) as caught:
        await t.request("GET", url)
    assert (caught.value.url, caught.value.reason) == (url, reason)
    assert t.statistics().opened == 0


async def test_an_invalid_url_never_shows_its_password() -> None:
    """The user:password@ part of a bad URL is masked in the error."""
    with pytest.raises(InvalidURL) as caught:
        await transport().request("GET", "http://me:hunter2-secret@host:99999/v1")
    assert str(caught.value) == "http://***@host:99999/v1: Port out of range 0-65535"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # urlsplit takes the authority's last '@': the password keeps its own.
        ("http://me:p@ss-secret@host:99999/v1", "http://***@host:99999/v1"),
        # Without the scheme (or its //) the user:password part is still masked.
        ("//me:hunter2-secret@host/v1", "//***@host/v1"),
        ("me:hunter2-secret@host/v1", "***@host/v1"),
    ],
)
async def test_an_invalid_url_masks_every_form_of_password(url: str, shown: str) -> None:
    """A password holding '@', or a URL without a scheme, never shows its password."""
    with pytest.raises(InvalidURL) as caught:
        await transport().request("GET", url)
    assert caught.value.url == shown
    assert "secret" not in str(caught.value)


ENCODE = "; a '/', '?', '#' or '@' in a user name or password must be percent-encoded"


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        # urlsplit reads "pa" as the port and quotes it in its own message.
        ("http://user:pa/ss-secret@host/v1", "http://***@host/v1", "its port is not a number"),
        ("http://user:pa?ss-secret@host/v1", "http://***@host/v1", "its port is not a number"),
        ("http://user:pa#ss-secret@host/v1", "http://***@host/v1", "its port is not a number"),
    ],
)
async def test_an_unparsable_url_quotes_no_part_of_its_password(
    url: str, shown: str, reason: str
) -> None:
    """A URL urlsplit refuses (a '/' in the password) shows no part of user:password."""
    with pytest.raises(InvalidURL) as caught:
        await transport().request("GET", url)
    assert caught.value.url == shown
    assert str(caught.value) == f"{shown}: {reason}{ENCODE}"


async def test_a_port_that_is_not_a_number_says_so() -> None:
    """A port that is not a number is named as the reason, with no hint when there is no '@'."""
    with pytest.raises(InvalidURL) as caught:
        await transport().request("GET", "http://host:80x/v1")
    assert str(caught.value) == "http://host:80x/v1: its port is not a number"


async def test_a_line_break_in_a_header_value_is_refused_without_the_value() -> None:
    """A header value with a line break is refused; the message names the header only."""
    t = Transport({"Authorization": "Bearer sk-secret\r\nX-Evil: 1"}, limit=1)
    with pytest.raises(InvalidHeader) as caught:
        await t.request("GET", "http://127.0.0.1:1/")
    assert str(caught.value) == "the value of header 'Authorization' holds a line break"


# The request.


async def test_request_bytes() -> None:
    """Host (with a non-default port), User-Agent, the caller's headers, length, target."""
    async with RawServer() as server:
        t = Transport({"Accept": "application/json", "OpenAI-Organization": "org-1"}, limit=1)
        try:
            await t.request("POST", server.url("/v1/chat/completions"), body=b'{"x": 1}')
            await t.request("GET", server.url("/v1beta/models?alt=json"), params={"pageSize": "1"})
        finally:
            await t.aclose()
    post, get = server.seen
    assert (post.method, post.target, post.body) == ("POST", "/v1/chat/completions", b'{"x": 1}')
    assert post.lines[0] == f"Host: 127.0.0.1:{server.port}"
    assert post.headers["user-agent"] == USER_AGENT
    assert "OpenAI-Organization: org-1" in post.lines
    assert post.headers["content-length"] == "8"
    assert (get.method, get.target) == ("GET", "/v1beta/models?alt=json&pageSize=1")
    assert "content-length" not in get.headers


async def test_callers_headers_replace_the_defaults_in_any_case() -> None:
    """A caller's user-agent (any spelling) replaces the default one; nothing is sent twice."""
    async with RawServer() as server:
        t = Transport({"user-agent": "my-gateway/2"}, limit=1)
        try:
            await t.request("GET", server.url())
        finally:
            await t.aclose()
    (seen,) = server.seen
    assert [line for line in seen.lines if line.lower().startswith("user-agent")] == [
        "user-agent: my-gateway/2"
    ]


async def test_user_and_password_in_the_url_are_basic_auth() -> None:
    """user:password@ in a base URL is sent as basic auth, not in the request line."""
    async with RawServer() as server:
        t = Transport({}, limit=1)
        try:
            await t.request("GET", f"http://proxy%40corp:s%3Acret@127.0.0.1:{server.port}/v1/x")
        finally:
            await t.aclose()
    (seen,) = server.seen
    assert seen.target == "/v1/x"
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(
        b"proxy@corp:s:cret"
    ).decode("ascii")
    assert seen.headers["host"] == f"127.0.0.1:{server.port}"


def test_user_agent_names_python_and_runner() -> None:
    """The default User-Agent is Python's version and runner's, in aiohttp's format."""
    assert USER_AGENT.startswith("Python/3.")
    assert " runner/" in USER_AGENT


async def test_repr_holds_no_header() -> None:
    """A transport's repr shows no header, so no key."""
    assert "sk-secret" not in repr(transport())


# The pool.


async def test_sequential_requests_share_one_connection() -> None:
    """Consecutive requests reuse the kept-alive connection."""
    async with RawServer() as server:
        t = transport()
        try:
            for _ in range(5):
                await t.request("POST", server.url(), body=b"{}")
            stats = t.statistics()
        finally:
            await t.aclose()
    assert server.connections == 1
    assert (stats.opened, stats.open, stats.idle) == (1, 1, 1)


async def test_pool_never_opens_more_than_its_limit() -> None:
    """Twenty concurrent requests over a limit of 3: at most 3 connections, all answered."""
    async with RawServer() as server:
        server.script(*[Answer(delay=0.02) for _ in range(20)])
        t = transport(limit=3)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(t.request, "POST", server.url())
            stats = t.statistics()
        finally:
            await t.aclose()
    assert len(server.seen) == 20
    assert server.connections == 3
    assert server.most_open == 3
    assert stats.opened == 3


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    """A caller cancelled while waiting for a connection does not take or leak the slot."""
    async with RawServer() as server:
        server.script(Answer(delay=0.2))
        t = transport(limit=1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(t.request, "GET", server.url())
                await server.wait_seen(1)  # the first request holds the only connection
                with anyio.move_on_after(0.05) as scope:
                    await t.request("GET", server.url())
                assert scope.cancelled_caught
            reply = await t.request("GET", server.url())
        finally:
            await t.aclose()
    assert reply.status == 200
    assert len(server.seen) == 2
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        response(headers=("Connection: close",)),
        response(version="HTTP/1.0"),
        response(version="HTTP/1.0", headers=("Connection: keep-alive",)),
    ],
    ids=["Connection: close", "HTTP/1.0", "HTTP/1.0 keep-alive"],
)
async def test_connections_the_server_will_not_keep_are_not_reused(answer: bytes) -> None:
    """After Connection: close or any HTTP/1.0 answer the next request opens a new connection."""
    async with RawServer() as server:
        server.script(answer)
        t = transport()
        try:
            await t.request("POST", server.url(), body=b"{}")
            await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert [s.connection for s in server.seen] == [1, 2]


async def test_idle_connection_closed_by_the_server_is_not_used() -> None:
    """The server closes a kept-alive connection while idle: the next request still works."""
    async with RawServer() as server:
        server.script(Answer(close=True))  # no Connection: close, the server just hangs up
        t = transport()
        try:
            await t.request("POST", server.url(), body=b"{}")
            await server.wait_closed(1)
            await wait_until_idle_count(t, 0)
            reply = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert reply.status == 200
    assert [s.connection for s in server.seen] == [1, 2]


async def test_a_write_that_fails_at_once_is_sent_again_on_a_fresh_connection() -> None:
    """A kept-alive socket that refuses the first byte: the request goes once, on a new one."""
    async with RawServer() as server:
        t = transport()
        try:
            await t.request("POST", server.url(), body=b"{}")
            (conn,) = t._pools[next(iter(t._pools))]._idle
            # Our side of the socket can no longer send; the event loop has not
            # run since, so the pool still holds it as idle and usable.
            assert conn._transport is not None
            conn._transport.get_extra_info("socket").shutdown(socket.SHUT_WR)
            reply = await t.request("POST", server.url(), body=b'{"n": 2}')
            stats = t.statistics()
        finally:
            await t.aclose()
    assert reply.status == 200
    assert [(s.connection, s.body) for s in server.seen] == [(1, b"{}"), (2, b'{"n": 2}')]
    assert stats.opened == 2


async def test_a_reused_connection_that_drops_the_request_is_not_retried() -> None:
    """Once the request may have reached the server, a dropped connection is an error."""
    async with RawServer() as server:
        server.script(response(), Answer(b"", close=True))
        t = transport()
        try:
            await t.request("POST", server.url(), body=b"{}")
            with pytest.raises(Disconnected) as caught:
                await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert caught.value.stage == "answer"
    assert len(server.seen) == 2


async def test_idle_connections_close_after_the_keepalive_time() -> None:
    """An idle connection is closed once its keep-alive time is over."""
    async with RawServer() as server:
        t = transport(keepalive=0.05)
        try:
            await t.request("GET", server.url())
            await server.wait_closed(1)
            stats = t.statistics()
        finally:
            await t.aclose()
    assert (stats.opened, stats.open, stats.idle) == (1, 0, 0)


async def test_unasked_bytes_on_an_idle_connection_retire_it() -> None:
    """A connection that sends bytes nobody asked for is closed and never reused."""
    async with RawServer() as server:
        server.script(response() + b"HTTP/1.1 200 OK\r\n")
        t = transport()
        try:
            await t.request("GET", server.url())
            await t.request("GET", server.url())
        finally:
            await t.aclose()
    assert [s.connection for s in server.seen] == [1, 2]


# Cancellation and shutdown.


async def test_cancelled_request_closes_its_connection() -> None:
    """A request cancelled mid-wait closes its connection; the next one gets a fresh one."""
    async with RawServer() as server:
        server.script(Answer(delay=0.5))
        t = transport()
        try:
            with anyio.move_on_after(0.1) as scope:
                await t.request("POST", server.url(), body=b"{}")
            assert scope.cancelled_caught
            await server.wait_closed(1)
            reply = await t.request("POST", server.url(), body=b"{}")
        finally:
            await t.aclose()
    assert reply.body == JSON_OK
    assert [s.connection for s in server.seen] == [1, 2]


async def test_aclose_closes_every_connection_and_leaves_no_socket() -> None:
    """aclose() ends every connection, idle or not, and no socket is left for the GC."""
    async with RawServer() as server:
        t = transport(limit=4)
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(t.request, "GET", server.url())
        assert t.statistics().open >= 1
        await t.aclose()
        assert t.statistics().open == 0
        await server.wait_closed(server.connections)
        gc.collect()  # an unclosed socket would be a ResourceWarning (an error here)
        await t.aclose()  # twice is fine


async def test_aclose_during_a_request_ends_it() -> None:
    """aclose() while a request waits closes its connection; the request fails, never hangs."""
    async with RawServer() as server:
        server.script(Answer(delay=1.0))
        t = transport()
        failure: list[BaseException] = []

        async def call() -> None:
            try:
                await t.request("GET", server.url())
            except Disconnected as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await server.wait_seen(1)  # the request is on its connection, awaiting the answer
            await t.aclose()
    assert len(failure) == 1


class SilentServer:
    """Accepts connections and never says a word: a TLS handshake with it never ends."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.ended = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted.set()
        try:
            await reader.read()  # until the client closes its end
            self.ended.set()
        finally:
            writer.close()


async def test_aclose_while_a_connection_opens_closes_it_and_fails_its_request() -> None:
    """A connection still opening at aclose() is closed with it; its request is Disconnected."""
    async with SilentServer() as server:
        t = transport()
        failure: list[BaseException] = []

        async def call() -> None:
            try:
                await t.request("GET", server.url)
            except Disconnected as exc:
                failure.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await server.accepted.wait()  # connected, the TLS handshake under way
                await t.aclose()
                assert t.statistics().open == 0
            await server.ended.wait()
        gc.collect()  # an unclosed socket would be a ResourceWarning (an error here)
    assert [str(e) for e in failure] == ["disconnected before the end of the answer"]
    assert t.statistics().opened == 0


@pytest.mark.parametrize(
    ("url", "host", "target"),
    [
        ("https://api.openai.com/v1/chat/completions", "api.openai.com", "/v1/chat/completions"),
        ("http://localhost:80/v1/models", "localhost", "/v1/models"),
        ("https://h.example:8443", "h.example:8443", "/"),
        ("http://[::1]:11434/v1/models?limit=1", "[::1]:11434", "/v1/models?limit=1"),
        ("http://bücher.example/a b", "xn--bcher-kva.example", "/a%20b"),
    ],
)
def test_host_header_and_target(url: str, host: str, target: str) -> None:
    """Host carries the port only when it is not the default; IDNA hosts, paths encoded once."""
    _, parsed_target, authority = _parse(url)
    assert (authority, parsed_target) == (host, target)


async def test_every_address_of_a_name_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose first address refuses is reached at its next one."""
    async with RawServer() as server:
        loop = asyncio.get_running_loop()
        addresses = ["127.0.0.2", "127.0.0.1"]  # the server listens on 127.0.0.1 only

        async def resolve(host: str, port: int, **kwargs: object) -> list[object]:
            assert host == "api.test"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in addresses]

        monkeypatch.setattr(loop, "getaddrinfo", resolve)
        t = transport()
        try:
            reply = await t.request("GET", f"http://api.test:{server.port}/v1/models")
        finally:
            await t.aclose()
    assert reply.status == 200
    assert server.seen[0].headers["host"] == f"api.test:{server.port}"


def unreachable(monkeypatch: pytest.MonkeyPatch, addresses: list[str], dead: set[str]) -> None:
    """Resolve any name to ``addresses``; connecting to one in ``dead`` times out (ETIMEDOUT)."""
    loop = asyncio.get_running_loop()
    connect = loop.create_connection

    async def resolve(host: str, port: int, **kwargs: object) -> list[object]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in addresses]

    async def create_connection(factory: Any, host: str, port: int, **kwargs: Any) -> Any:
        if host in dead:
            raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
        return await connect(factory, host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    monkeypatch.setattr(loop, "create_connection", create_connection)


async def test_an_address_that_times_out_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose first address times out on connect is reached at its next one."""
    async with RawServer() as server:
        unreachable(monkeypatch, ["192.0.2.1", "127.0.0.1"], {"192.0.2.1"})
        t = transport()
        try:
            reply = await t.request("GET", f"http://api.test:{server.port}/v1/models")
        finally:
            await t.aclose()
    assert reply.status == 200
    assert len(server.seen) == 1


async def test_every_address_timing_out_is_connect_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """When every address times out the error names the host, port and the timeout."""
    unreachable(monkeypatch, ["192.0.2.1", "192.0.2.2"], {"192.0.2.1", "192.0.2.2"})
    t = transport()
    try:
        with pytest.raises(ConnectFailed) as caught:
            await t.request("GET", "http://api.test:8080/v1/models")
    finally:
        await t.aclose()
    assert str(caught.value) == "cannot connect to api.test:8080: connection timed out"
    assert isinstance(caught.value.os_error, TimeoutError)


async def test_a_provider_whose_addresses_all_time_out_reports_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a provider, every address timing out is a retryable 'timeout' naming the host."""
    unreachable(monkeypatch, ["192.0.2.1", "192.0.2.2"], {"192.0.2.1", "192.0.2.2"})
    provider = open_provider(
        ProviderConfig(id="slow", type="openai", model="m", base_url="http://api.test:8080/v1")
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.check_credentials()
    finally:
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert caught.value.message == "cannot connect to api.test:8080: connection timed out"


async def test_a_name_that_does_not_resolve_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS failure is ConnectFailed with the resolver's words, host and port."""
    loop = asyncio.get_running_loop()

    async def resolve(host: str, port: int, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    provider = open_provider(
        ProviderConfig(id="gone", type="openai", model="m", base_url="http://api.gone.test/v1")
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.check_credentials()
    finally:
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("connection_error", True)
    assert caught.value.message == "cannot connect to api.gone.test:80: Name or service not known"


# Through a provider: the errors a user sees.


async def test_a_provider_call_cut_by_its_deadline_leaves_no_connection() -> None:
    """The caller's cancel scope ends a stalled call; its connection is closed, not pooled."""
    async with RawServer() as server:
        server.script(Answer(delay=0.5))
        provider = open_provider(
            ProviderConfig(id="slow", type="openai", model="m", base_url=server.url("/v1"))
        )
        try:
            with anyio.move_on_after(0.1) as scope:
                await provider.check_credentials()
            assert scope.cancelled_caught
            await server.wait_closed(1)
        finally:
            await provider.aclose()
    assert server.closed == 1


async def test_provider_maps_an_invalid_base_url_to_bad_request() -> None:
    """A base_url without a scheme is a non-retryable bad_request saying what to write."""
    provider = open_provider(
        ProviderConfig(id="local", type="openai", model="m", base_url="localhost:11434/v1")
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.check_credentials()
    finally:
        await provider.aclose()
    error = caught.value
    assert (error.code, error.retryable) == ("bad_request", False)
    assert error.message == (
        "invalid URL: localhost:11434/v1/models (the scheme is 'localhost'; "
        "the URL must start with http:// or https://)"
    )


async def test_provider_maps_a_garbled_answer_to_a_retryable_connection_error() -> None:
    """A server that does not speak HTTP is a connection_error naming the fault."""
    async with RawServer() as server:
        server.script(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        provider = open_provider(
            ProviderConfig(id="odd", type="openai", model="m", base_url=server.url("/v1"))
        )
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.check_credentials()
        finally:
            await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("connection_error", True)
    assert caught.value.message.startswith("not a valid HTTP/1.1 response (")


# TLS.


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def test_https_with_a_trusted_ca_and_sni(certificates: Certificates) -> None:
    """https to a server whose CA the context trusts: verified, SNI sent, answered."""
    names: list[str | None] = []
    context = certificates.server_context()
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    async with RawServer(ssl_context=context) as server:
        t = transport(ssl_context=certificates.client_context())
        try:
            first = await t.request("POST", server.url(host="localhost"), body=b"{}")
            second = await t.request("POST", server.url(host="localhost"), body=b"{}")
        finally:
            await t.aclose()
        await server.wait_closed(1)
    assert (first.body, second.body) == (JSON_OK, JSON_OK)
    assert names == ["localhost"]
    assert server.connections == 1


async def test_https_refuses_an_unknown_ca(certificates: Certificates) -> None:
    """The default trust store does not know the test CA: a non-retryable connection_error."""
    async with RawServer(ssl_context=certificates.server_context()) as server:
        provider = open_provider(
            ProviderConfig(
                id="tls",
                type="openai",
                model="m",
                base_url=server.url("/v1", host="localhost"),
                api_key=Secret("sk-tls-0123456789"),
            )
        )
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.check_credentials()
        finally:
            await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("connection_error", False)
    assert caught.value.message.startswith(
        f"cannot connect to localhost:{server.port}: TLS certificate verification failed: "
    )


async def test_https_checks_the_host_name(certificates: Certificates) -> None:
    """A certificate for localhost does not pass for 127.0.0.1."""
    async with RawServer(ssl_context=certificates.server_context()) as server:
        t = transport(ssl_context=certificates.client_context())
        try:
            with pytest.raises(ConnectFailed) as caught:
                await t.request("GET", server.url(host="127.0.0.1"))
        finally:
            await t.aclose()
    assert caught.value.certificate
    assert "IP address mismatch" in caught.value.reason


async def test_ssl_cert_file_points_a_provider_at_a_custom_ca(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE (read when the provider's first https connection opens) adds no code path."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca))
    async with RawServer(ssl_context=certificates.server_context()) as server:
        server.script(response(b'{"object": "list", "data": []}'))
        provider = open_provider(
            ProviderConfig(
                id="vllm", type="openai", model="m", base_url=server.url("/v1", host="localhost")
            )
        )
        try:
            await provider.check_credentials()
        finally:
            await provider.aclose()
    assert server.seen[0].target == "/v1/models"


def test_certificates_helper_makes_files(tmp_path: Path) -> None:
    """The openssl helper leaves a CA, a certificate and a key behind."""
    made = make_certificates(tmp_path)
    assert made.ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert made.key.exists()
