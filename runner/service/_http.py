"""The worker's listening side: what one connection may cost, and JSON for every error.

aiohttp parses HTTP and runs the application (``_server``); this module
bounds what clients can hold and makes sure nothing the server says is
anything but the documented JSON error shape:

* **Request head timeout** (``worker.head_timeout``): a connection must send
  a complete request head within that many seconds of opening, and its next
  one within as many seconds of the application answering its last (so it
  also bounds idle keep-alive connections and clients that stop reading
  their answer).  Otherwise it is closed.
* **Body timeout** (``worker.body_timeout``): applied by the handler that
  reads a body (``POST /v1/tasks``, 408 past it).
* **Connection cap** (``worker.max_connections``, lowered to fit the
  process's open-files limit): one connection more makes the oldest
  connection that is not inside a handler (idle, still sending its head, or
  not reading its answer) close; if every connection is inside a handler, the
  new one is closed at once.  So a flood of half-sent requests cannot starve
  ``/healthz`` or a client that sends whole requests.
* **JSON errors**: aiohttp's own answers (400 for malformed HTTP, 500, 504)
  use :func:`error`'s shape like the application's.
* **Reports, not floods**: each kind of trouble (accept failures such as
  ``EMFILE``, malformed requests, evictions, internal errors) is reported in
  one line at most once per :data:`REPORT_INTERVAL`, with the count held
  back since the last line.

asyncio only: aiohttp and the event loop's accept path are asyncio's.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import anyio
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from runner._errors import UsageError

#: Seconds between two report lines of the same kind.
REPORT_INTERVAL: Final = 60.0
#: Connections the kernel holds for accept (aiohttp's default).  asyncio also
#: accepts up to this many at once, before any of them reaches the cap below.
BACKLOG: Final = 128
#: Open files kept free of connections, the cap is lowered to fit beside them:
#: a few bursts of accepts not yet counted (or evicted but not yet closed, which
#: asyncio does on its next turn), the journal, the metrics database, stdio.
#: Running out means EMFILE, and asyncio then stops accepting for a second.
FD_RESERVE: Final = 3 * BACKLOG + 64
#: The cap is never lowered below this, whatever the open-files limit.
MIN_CONNECTIONS: Final = 16

_ENCODER: Final = msgspec.json.Encoder()
#: What ``AppRunner(access_log=None)`` passes to each connection (typed as a
#: Logger by aiohttp, though ``None`` is how it is turned off).
_NO_ACCESS_LOG: Final[dict[str, Any]] = {"access_log": None}


def error(status: int, code: str, message: str, **extra: object) -> web.Response:
    """A JSON error response: ``{"error": code, "message": message, ...extra}``."""
    body = {"error": code, "message": message, **extra}
    return web.Response(status=status, body=_ENCODER.encode(body), content_type="application/json")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one connection may take (the ``worker:`` settings of the same names)."""

    head_timeout: float = 20.0
    body_timeout: float = 60.0
    max_connections: int = 1000


class Reports:
    """One line per kind of trouble per ``interval``, carrying the count held back."""

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def report(self, kind: str, text: str) -> None:
        """Say ``text`` unless a line of this ``kind`` went out less than an interval ago."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        if held:
            text += f" ({held} more like this since the last report)"
        self._last[kind] = now
        self._say(text)


def connection_cap(wanted: int, *, reserve: int = FD_RESERVE) -> int:
    """``wanted``, lowered so that the connections fit under the open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(MIN_CONNECTIONS, soft - reserve))


class _Guard:
    """The open connections, oldest first, and the cap over them."""

    def __init__(self, limits: Limits, reports: Reports) -> None:
        self.limits = limits
        self.reports = reports
        # A dict keeps opening order: the first idle entry is the oldest.
        self.open: dict[_Connection, None] = {}

    def opened(self, conn: _Connection) -> None:
        self.open[conn] = None
        if len(self.open) <= self.limits.max_connections:
            return
        victim = next((c for c in self.open if c.in_handler == 0 and c is not conn), conn)
        del self.open[victim]
        victim.force_close()
        self.reports.report(
            "cap",
            f"{self.limits.max_connections} connections open (worker.max_connections):"
            " closing the oldest that are idle or have not sent a whole request",
        )

    def closed(self, conn: _Connection) -> None:
        self.open.pop(conn, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the connection busy while a handler runs: it is not evicted meanwhile."""
        conn = request.protocol
        if not isinstance(conn, _Connection):
            return await handler(request)
        conn.begin_request()
        try:
            return await handler(request)
        finally:
            conn.end_request()


class _Connection(RequestHandler):
    """aiohttp's connection handler, with the head timeout, the cap and JSON errors."""

    __slots__ = ("_guard", "_head_timer", "in_handler")

    def __init__(self, guard: _Guard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        #: Handlers of this connection running now (more than one when pipelined).
        self.in_handler = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()
        self._guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.closed(self)
        super().connection_lost(exc)

    def begin_request(self) -> None:
        self.in_handler += 1
        self._disarm()

    def end_request(self) -> None:
        self.in_handler -= 1
        if self.in_handler == 0:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        timeout = self._guard.limits.head_timeout
        self._head_timer = self._loop.call_later(timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.in_handler == 0:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error answer (malformed HTTP, a handler's crash or timeout), as JSON."""
        reason = _first_line(message or (str(exc) if exc is not None else ""))
        if status >= 500:
            kind = "internal" if status == 500 else "timeout"
            where = f"{request.method} {shown_safely(request.path)}"
            self._guard.reports.report(kind, f"answered {status} to {where}: {reason}")
        else:
            self._guard.reports.report("malformed", f"answered 400 to malformed HTTP: {reason}")
        if request.writer.output_size > 0:
            # Part of an answer went out already: the connection is beyond repair.
            raise ConnectionError("an answer was partly sent before the error")
        code, text = _AIOHTTP_ERRORS.get(status, ("error", "the request failed"))
        if status == 400 and reason:
            text = f"{text} ({reason})"
        response = error(status, code, text)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own error log: one rate-limited line instead of a traceback each."""
        exc = kw.get("exc_info")
        detail = f": {type(exc).__name__}" if isinstance(exc, BaseException) else ""
        text = str(args[0]) if args else "error"
        with suppress(TypeError, ValueError):
            text = text % args[1:]
        self._guard.reports.report("aiohttp", f"HTTP server: {_first_line(text)}{detail}")


_AIOHTTP_ERRORS: Final = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    500: ("internal_error", "the worker failed to answer (a bug in runner; its log says where)"),
    504: ("timeout", "the worker did not answer in time; retry"),
}


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return shown_safely(line.rstrip(":"))


def shown_safely(text: str, limit: int = 120) -> str:
    """Client-supplied text made safe for one log line: printable and short."""
    safe = "".join(c if c.isprintable() else "?" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


class _Site(web.BaseSite):
    """A TCP site whose connections are :class:`_Connection` objects."""

    __slots__ = ("_factory", "_host", "_port")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, factory: Callable[[], _Connection]
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._factory = factory

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self._host, self._port, backlog=BACKLOG
        )


def _accept_errors(
    reports: Reports, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]:
    """The loop's exception handler: accept failures reported, not logged per attempt."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> object:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            reports.report(
                "accept",
                f"cannot accept connections: {reason}; raise the open-files limit"
                " (ulimit -n) or lower worker.max_connections",
            )
            return None
        if previous is not None:
            return previous(loop, context)
        loop.default_exception_handler(context)
        return None

    return handle


@asynccontextmanager
async def serve(
    app: web.Application, host: str, port: int, *, limits: Limits, reports: Reports
) -> AsyncIterator[str]:
    """Listen on ``host:port`` under ``limits``; yield the URL; on exit close every connection.

    Raises :class:`UsageError` if the address cannot be bound.
    """
    guard = _Guard(limits, reports)
    app.middlewares.insert(0, guard.middleware)
    http = web.AppRunner(app, access_log=None, handle_signals=False)
    await http.setup()
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_accept_errors(reports, previous))
    try:
        server = http.server
        assert server is not None  # set by setup()

        def connection() -> _Connection:
            return _Connection(
                guard,
                server,
                loop=loop,
                # aiohttp's own idle timer, kept in step with ours.
                keepalive_timeout=limits.head_timeout,
                **_NO_ACCESS_LOG,
            )

        site = _Site(http, host, port, connection)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = next((a[1] for a in http.addresses if isinstance(a, tuple)), port)
        yield f"http://{host}:{bound}"
    finally:
        with anyio.CancelScope(shield=True):
            await http.cleanup()
        loop.set_exception_handler(previous)
