"""A lean HTTP/1.1 client for the provider adapters: a keep-alive pool per origin.

The adapters send one small JSON request and read one small JSON answer per
call, many at once.  A general client (aiohttp's ``ClientSession``) spends
more CPU per request on URL objects, header multidicts, cookie jars, tracing
and response objects than the provider call itself is worth here, so this
module does only what the adapters need, on :class:`asyncio.Protocol` with
``httptools`` (llhttp, the parser uvicorn and Node use) framing responses in C:

* ``http`` and ``https`` (``ssl.create_default_context()``: certificate and
  host name checked, SNI sent; ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` point it at
  other CAs, or a :class:`Transport` takes an ``ssl_context``);
* one pool per origin of at most ``limit`` connections (callers wait for one,
  first come first served), reused while the server keeps them alive and
  closed after ``keepalive`` idle seconds;
* responses framed by ``Content-Length``, chunked encoding or the end of the
  connection, ``gzip`` and ``deflate`` bodies decoded;
* requests with ``Host``, ``User-Agent``, ``Accept-Encoding``, the caller's
  headers and a ``Content-Length`` body, written in one ``write``.

It does not follow redirects, send cookies, use proxies (aiohttp's
``trust_env`` was off too, so ``HTTP(S)_PROXY`` was never read), pipeline,
stream, or set timeouts: the caller owns every deadline, and cancelling a
request closes its connection, so no half-read connection is ever reused.

A connection is reused only after a complete HTTP/1.1 response whose server
kept it alive.  An idle connection the server closed is noticed by the event
loop (its end of file) and skipped; one that fails while the request is being
written, before the kernel took a single byte of it, is replaced by a fresh
connection once (the only retry here: nothing of the request can have reached
the server).  Every other failure is one :class:`TransportError`, which
``workers._http`` turns into a ``ProviderError``.

Headers may carry keys: nothing here puts a header value into an exception,
a repr or a log.  asyncio only.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
import sys
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Literal
from urllib.parse import quote, unquote, urlencode, urlsplit

import httptools
from msgspec import Struct

from workers._secrets import REDACTED

#: Seconds an idle connection is kept (aiohttp's default keep-alive time).
KEEPALIVE: Final = 15.0

_PORTS: Final = {"http": 80, "https": 443}
# RFC 3986 characters a path or query may hold as they are; anything else is
# percent-encoded once when a URL is first seen ('%' kept: already encoded).
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE: Final = _PATH_SAFE + "?"


def _user_agent() -> str:
    try:
        ours = f"runner/{version('runner')}"
    except PackageNotFoundError:  # workers copied without its distribution
        ours = "runner"
    return f"Python/{sys.version_info[0]}.{sys.version_info[1]} {ours}"


USER_AGENT: Final = _user_agent()


# Errors.


class TransportError(Exception):
    """A request that got no usable HTTP response; never holds a header value."""


class InvalidURL(TransportError):
    """The URL cannot be requested (no http/https scheme, no host, a bad port).

    ``url`` is shown without a ``user:password@`` part, which may hold a secret.
    """

    def __init__(self, url: str, reason: str) -> None:
        shown = _mask_invalid(url)
        super().__init__(f"{shown}: {reason}")
        self.url = shown
        self.reason = reason


# Everything before the URL's last '@', wherever it is: in a URL that failed
# to parse, a '/', '?' or '#' in the password ends the authority early (so
# mask_url, which stops there, would show the password's start); masking a
# path's '@' too is the safe mistake in an error message.
_ANY_USERINFO: Final = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//)?.*@", re.DOTALL)


def _mask_invalid(url: str) -> str:
    """``url`` for an :class:`InvalidURL` message: no part of a ``user:password@`` shown."""
    return _ANY_USERINFO.sub(rf"\1{REDACTED}@", url, count=1)


# urlsplit's own messages that quote nothing of the URL, so can be shown as they are.
_PLAIN_REASONS: Final = frozenset({"Port out of range 0-65535"})


def _unparsable(url: str, exc: ValueError) -> str:
    """Why urlsplit refused ``url``, never quoting it (its messages may quote a password)."""
    message = str(exc)
    if message in _PLAIN_REASONS:
        return message
    hint = ""
    if "@" in url:
        hint = "; a '/', '?', '#' or '@' in a user name or password must be percent-encoded"
    if message.startswith("Port could not be cast"):
        return f"its port is not a number{hint}"
    if message.startswith("Invalid IPv6 URL"):
        return "the [ ] around its IPv6 address do not match"
    if "NFKC" in message:
        return f"its host holds characters that read as '/', '?', '#', '@' or ':'{hint}"
    return f"it cannot be read as a URL{hint}"


class InvalidHeader(TransportError):
    """A header that cannot be sent; names the header, never its value."""


class ConnectFailed(TransportError):
    """No connection: refused, unresolvable, unreachable, or a TLS handshake failure."""

    def __init__(self, host: str, port: int, reason: str, *, os_error: OSError) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason
        self.os_error = os_error

    @property
    def certificate(self) -> bool:
        """Whether the server's certificate was refused (a setting to fix, not a fault to retry)."""
        return isinstance(self.os_error, ssl.SSLCertVerificationError)


Stage = Literal["answer", "head", "body"]


class Disconnected(TransportError):
    """The connection ended before the response was complete.

    ``stage`` says how far it got: no byte of an ``answer``, part of the
    ``head``, or part of the ``body`` (then ``status`` is known).
    """

    def __init__(self, stage: Stage, status: int | None, os_error: OSError | None) -> None:
        super().__init__(f"disconnected before the end of the {stage}")
        self.stage = stage
        self.status = status
        self.os_error = os_error


class BadResponse(TransportError):
    """Bytes that are not a valid HTTP/1.x response, or a body that cannot be decoded."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Unsent(Exception):
    """The request's write failed at once: the kernel took no byte of it."""


# The response.


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; repeated ones joined by ``", "``.

    Decoded on first use: the adapters read headers of a successful answer
    rarely, so most responses never pay for it.
    """

    __slots__ = ("_items", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._items: dict[str, str] | None = None

    def _decoded(self) -> dict[str, str]:
        items = self._items
        if items is None:
            items = self._items = {}
            for raw_name, raw_value in self._raw:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1").strip()
                items[name] = f"{items[name]}, {value}" if name in items else value
        return items

    def __getitem__(self, name: str) -> str:
        return self._decoded()[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"Headers({self._decoded()!r})"


class Response:
    """A complete response: status, headers and the (decoded) body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class TransportStatistics(Struct, frozen=True, kw_only=True):
    """A snapshot of a transport's connections, over all its origins."""

    #: Connections opened since the transport was made (or last closed).
    opened: int
    #: Connections open now, in use or idle.
    open: int
    #: Open connections waiting in a pool for their next request.
    idle: int


# One connection.


class _Connection(asyncio.Protocol):
    """One socket: sends a request, frames the response with llhttp, reports the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._received = False  # any byte of the current response
        self._head_done = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self.reusable = False  # set after each complete keep-alive response
        self.idle_since = 0.0

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (a late answer, a server's goodbye): the
            # connection is out of step and must not carry another request.
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"not a valid HTTP/1.1 response ({exc})", self._status()))
            self.close()
        except httptools.HttpParserUpgrade:
            # A 101 (not an HttpParserError): uncaught, asyncio would log it
            # as a fatal error with a traceback and the call would read as a
            # connection closed without an answer.
            self._fail(
                BadResponse(
                    "a 101 Switching Protocols answer: runner does not switch protocols", 101
                )
            )
            self.close()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._end(exc if isinstance(exc, OSError) else None)
        if not self.lost.done():
            self.lost.set_result(None)

    # httptools callbacks.

    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # A second response after the one asked for: out of step.  Fresh
            # lists, so its headers never land in the response handed out.
            self._headers = []
            self._body = []
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._reset()
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.reusable = (
            self._parser.should_keep_alive() and self._parser.get_http_version() == "1.1"
        )
        self._complete(waiter, status)

    # Requests.

    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write ``request``; a future of the complete response (or a ``TransportError``).

        Not a coroutine, so the caller awaits the future with one frame fewer
        in the resume chain.  Raises ``_Unsent`` if the socket refused the
        request's first byte.
        """
        transport = self._transport
        assert transport is not None
        self.reusable = False
        self._reset()
        waiter: asyncio.Future[Response] = self._loop.create_future()
        # A done waiter counts as none: every callback checks ``done()``.
        self._waiter = waiter
        transport.write(request)
        if transport.is_closing():
            # The socket's send() failed on the first byte (asyncio closes a
            # transport whose write raises), so the server has seen nothing.
            self._waiter = None
            raise _Unsent
        return waiter

    @property
    def usable(self) -> bool:
        """Open and at rest (nothing of an earlier request still queued): fit for the next one."""
        transport = self._transport
        return (
            self.reusable
            and transport is not None
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    def close(self) -> None:
        """Close now (abort: nothing queued is worth sending); ``lost`` resolves soon after."""
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    # Internals.

    def _reset(self) -> None:
        self._headers = []
        self._body = []
        self._received = self._head_done = False

    def _status(self) -> int | None:
        return self._parser.get_status_code() if self._head_done else None

    def _header(self, wanted: bytes) -> bytes | None:
        """The first value of the header ``wanted`` (lower case) of the current response."""
        for name, value in self._headers:
            if name.lower() == wanted:
                return value.strip().lower()
        return None

    def _complete(self, waiter: asyncio.Future[Response], status: int) -> None:
        headers = self._headers
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        # One C-level scan of the names; the rare encoded body takes the slow path.
        if b"content-encoding" in b"\n".join([name for name, _ in headers]).lower():
            encoding = self._header(b"content-encoding") or b"identity"
            try:
                body = _decode(body, encoding)
            except (zlib.error, ValueError) as exc:
                self.reusable = False
                name = encoding.decode("latin-1")
                self._fail(BadResponse(f"its {name} body cannot be decoded ({exc})", status))
                return
        if not waiter.done():
            waiter.set_result(Response(status, Headers(headers), body))

    def _end(self, exc: OSError | None) -> None:
        """The peer closed (or the socket failed): finish or fail the current response."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.reusable = False
        if self._head_done and exc is None and self._ends_at_close():
            self._complete(waiter, self._parser.get_status_code())
            return
        stage: Stage = "body" if self._head_done else "head" if self._received else "answer"
        self._fail(Disconnected(stage, self._status(), exc))

    def _ends_at_close(self) -> bool:
        """Whether the current response's body is framed by the end of the connection."""
        status = self._parser.get_status_code()
        if status < 200 or status in (204, 304) or self._header(b"content-length") is not None:
            return False
        chunked = self._header(b"transfer-encoding")
        return chunked is None or not chunked.endswith(b"chunked")

    def _fail(self, error: TransportError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


def _decode(body: bytes, encoding: bytes) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)
    if encoding == b"deflate":
        # Servers send zlib-wrapped or raw deflate under this name; try both, as browsers do.
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, wbits=-zlib.MAX_WBITS)
    if encoding == b"identity":
        return body
    raise ValueError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")


# One origin's pool.


class _Pool:
    """At most ``limit`` connections to one origin; idle ones kept ``keepalive`` seconds."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: _Origin,
        limit: int,
        keepalive: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._origin = origin
        self._ssl = ssl_context
        self._keepalive = keepalive
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False  # by aclose(): a request still in flight keeps nothing
        self._opening: set[asyncio.Task[tuple[asyncio.BaseTransport, _Connection]]] = set()
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.opened = 0

    # Slots: one per connection in use or being opened.

    async def wait_for_slot(self) -> None:
        """Wait until a slot is handed over (the caller checked none is free)."""
        waiter = self._loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release_slot()  # handed a slot while being cancelled: pass it on
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise

    def release_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    # Connections.

    def take_idle(self) -> _Connection | None:
        """The most recently used live idle connection, closing dead ones found on the way."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._discard(conn)
        return None

    def put_back(self, conn: _Connection) -> None:
        if self._closed or not conn.usable:
            self._discard(conn)
            return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = self._loop.call_later(self._keepalive, self._sweep_idle)

    @staticmethod
    def _discard(conn: _Connection) -> None:
        conn.close()

    def _sweep_idle(self) -> None:
        self._sweep = None
        idle = self._idle
        expiry = self._loop.time() - self._keepalive
        while idle and (idle[0].idle_since <= expiry or not idle[0].usable):
            self._discard(idle.popleft())
        if idle:
            delay = idle[0].idle_since + self._keepalive - self._loop.time()
            self._sweep = self._loop.call_later(max(delay, 0.0), self._sweep_idle)

    async def connect(self) -> _Connection:
        """A new connection to the origin, trying each of its addresses in turn."""
        origin, loop = self._origin, self._loop
        try:
            hosts = (
                [origin.host]
                if origin.literal
                else list(
                    dict.fromkeys(
                        str(info[4][0])
                        for info in await loop.getaddrinfo(
                            origin.host, origin.port, type=socket.SOCK_STREAM
                        )
                    )
                )
            )
        except socket.gaierror as exc:
            raise ConnectFailed(
                origin.host, origin.port, exc.strerror or str(exc), os_error=exc
            ) from None
        error: OSError | None = None
        for host in hosts:
            try:
                return await self._open(host)
            except ssl.SSLCertVerificationError as exc:
                reason = f"TLS certificate verification failed: {exc.verify_message}"
                raise ConnectFailed(origin.host, origin.port, reason, os_error=exc) from None
            except ssl.SSLError as exc:
                reason = f"TLS handshake failed: {exc.reason or exc}"
                raise ConnectFailed(origin.host, origin.port, reason, os_error=exc) from None
            except OSError as exc:
                # Refused, unreachable or timed out (the OS's connect timeout,
                # a TimeoutError): the next address may answer.
                error = exc
        assert error is not None
        if isinstance(error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(error, TimeoutError):
            reason = "connection timed out"
        else:
            reason = error.strerror or str(error) or type(error).__name__
        raise ConnectFailed(origin.host, origin.port, reason, os_error=error)

    async def _open(self, address: str) -> _Connection:
        if self._closed:
            # A caller handed a slot of a pool aclose() ended: as if its
            # connection had been closed under it.
            raise Disconnected("answer", None, None)
        conn = _Connection(self._loop)
        # A task of its own, so aclose() can cancel a connect (or TLS
        # handshake) still under way: its socket is then closed by asyncio
        # before aclose() returns, never left to outlive it.
        opening = self._loop.create_task(
            self._loop.create_connection(
                lambda: conn,
                address,
                self._origin.port,
                ssl=self._ssl,
                server_hostname=self._origin.host if self._ssl is not None else None,
            )
        )
        self._opening.add(opening)
        try:
            await opening
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and opening.cancelled() and not (task and task.cancelling()):
                raise Disconnected("answer", None, None) from None
            raise
        finally:
            self._opening.discard(opening)
        if self._closed:
            # Opened just as aclose() ran (it closed the socket already).
            conn.close()
            await conn.lost
            raise Disconnected("answer", None, None)
        self.opened += 1
        # Kept until the socket is really closed, so aclose() can wait for it.
        self._all.add(conn)
        conn.lost.add_done_callback(lambda _: self._all.discard(conn))
        return conn

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed and not coming back."""
        self._discard(conn)

    @property
    def open(self) -> int:
        return len(self._all)

    @property
    def idle(self) -> int:
        return sum(1 for conn in self._idle if conn.usable)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._idle.clear()
        opening = list(self._opening)
        for task in opening:
            task.cancel()
        # A connect cancelled after it finished leaves its socket open: close it too.
        await asyncio.gather(*opening, return_exceptions=True)
        for task in opening:
            if not task.cancelled() and task.exception() is None:
                self._all.add(task.result()[1])
        conns = list(self._all)
        for conn in conns:
            conn.close()
        # Wait for the sockets themselves to close, so none outlives aclose()
        # (a socket closed after the loop stops is a ResourceWarning).
        for conn in conns:
            await conn.lost


# URLs.


class _Origin(Struct, frozen=True):
    scheme: str
    host: str
    port: int
    literal: bool  # an IP address: no name to resolve


class _Route(Struct, frozen=True):
    """A method and URL, parsed once: where to connect and the request head's fixed part."""

    origin: _Origin
    head: bytes  # request line and every header but Content-Length, no blank line
    body: bool  # whether the method sends a Content-Length


def _parse(url: str) -> tuple[_Origin, str, str]:
    """The origin, request target and ``Host`` value of an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(url, _unparsable(url, exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in _PORTS:
        why = f"the scheme is {scheme!r}" if scheme else "it has no scheme"
        raise InvalidURL(url, f"{why}; the URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise InvalidURL(url, "it names no host")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURL(url, f"bad host name ({exc})") from None
    default = _PORTS[scheme]
    port = default if port is None else port
    name = f"[{host}]" if ":" in host else host
    authority = name if port == default else f"{name}:{port}"
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return _Origin(scheme, host, port, literal), target, authority


def _credentials(url: str) -> str | None:
    """``user:password`` of the URL, base64-encoded for basic auth, or ``None``."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return base64.b64encode(pair.encode()).decode("ascii")


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n:") or name != name.strip():
            raise InvalidHeader(f"header name {name!r} cannot be sent")
        if "\r" in value or "\n" in value:
            raise InvalidHeader(f"the value of header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n".encode())
    return b"".join(lines)


# The transport.


class Transport:
    """Keep-alive HTTP/1.1 over asyncio for one provider: a pool per origin.

    ``headers`` go on every request after ``Host``, ``User-Agent`` and
    ``Accept-Encoding`` (a header of the same name, in any case, replaces
    those).  ``limit`` caps each origin's connections, ``keepalive`` is the
    idle time after which a connection is closed, ``ssl_context`` is used for
    ``https`` (default: :func:`ssl.create_default_context`, made on first use).
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        limit: int,
        keepalive: float = KEEPALIVE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        defaults = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
        given = {name.lower() for name in headers}
        merged = {k: v for k, v in defaults.items() if k.lower() not in given}
        merged.update(headers)
        self._given_host = next((v for k, v in headers.items() if k.lower() == "host"), None)
        merged = {k: v for k, v in merged.items() if k.lower() != "host"}
        self._headers = merged
        self._limit = limit
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._routes: dict[tuple[str, str], _Route] = {}
        self._pools: dict[_Origin, _Pool] = {}

    def __repr__(self) -> str:
        # No headers: they hold keys.
        return f"Transport(limit={self._limit}, origins={len(self._pools)})"

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and read its whole response (any status)."""
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        route = self._routes.get((method, url))
        if route is None:
            route = self._route(method, url)
        if body is None:
            request = route.head + b"\r\n" if not route.body else route.head + _EMPTY
        else:
            request = b"%sContent-Length: %d\r\n\r\n%s" % (route.head, len(body), body)
        pool = self._pools.get(route.origin) or self._pool(route.origin)
        if pool.free and not pool.waiters:
            pool.free -= 1
        else:
            await pool.wait_for_slot()
        try:
            conn = pool.take_idle()
            if conn is not None:
                try:
                    waiter = conn.send(request)
                except _Unsent:
                    # A kept-alive connection the server had closed: no byte
                    # of the request left, so a fresh connection may carry it.
                    pool.forget(conn)
                    conn = None
            if conn is None:
                conn = await pool.connect()
                try:
                    waiter = conn.send(request)
                except _Unsent:
                    pool.forget(conn)
                    raise Disconnected("answer", None, None) from None
            try:
                response = await waiter
            except BaseException:
                # Failed or cancelled half-way: closed, never reused.
                pool.forget(conn)
                raise
            pool.put_back(conn)
            return response
        finally:
            pool.release_slot()

    def statistics(self) -> TransportStatistics:
        """Connections opened so far, open now and idle now, over every origin."""
        pools = self._pools.values()
        return TransportStatistics(
            opened=sum(p.opened for p in pools),
            open=sum(p.open for p in pools),
            idle=sum(p.idle for p in pools),
        )

    async def aclose(self) -> None:
        """Close every connection and wait for the sockets to close; safe to call again.

        A connection still opening is given up too: its request fails with
        :class:`Disconnected`, as a request whose connection was closed does.
        The transport stays usable: a later request opens new connections.
        """
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()

    def _route(self, method: str, url: str) -> _Route:
        origin, target, authority = _parse(url)
        host = self._given_host or authority
        headers = self._headers
        credentials = _credentials(url)
        if credentials and not any(k.lower() == "authorization" for k in headers):
            # user:password@ in the URL is HTTP basic auth, as aiohttp sent it.
            headers = {**headers, "Authorization": f"Basic {credentials}"}
        request_line = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
        head = request_line.encode() + _encode_headers(headers)
        route = _Route(origin=origin, head=head, body=method != "GET")
        if len(self._routes) < 64:  # the adapters use a handful of URLs
            self._routes[(method, url)] = route
        return route

    def _pool(self, origin: _Origin) -> _Pool:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        pool = _Pool(asyncio.get_running_loop(), origin, self._limit, self._keepalive, context)
        self._pools[origin] = pool
        return pool


_EMPTY: Final = b"Content-Length: 0\r\n\r\n"
