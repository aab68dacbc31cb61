"""The machinery the three fake provider servers share.

A :class:`FakeServer` is a real ``aiohttp.web`` server on 127.0.0.1 (an
ephemeral port).  Every request is recorded, then validated the way the real
API validates it (a wrong request gets that provider's real error shape),
then answered by the next scripted :class:`Reply`, or, when the script is
empty, the way the real API answers a valid request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

from aiohttp import web

from runner.config import ProviderConfig
from workers import Secret

Fault = Literal["none", "truncate", "drop"]
Endpoint = Literal["generate", "models"]


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One scripted answer.

    With neither ``json`` nor ``body`` the server answers as it would by
    default (so ``Reply(delay=5)`` is a normal answer, late).  ``fault``
    ``truncate`` sends half the body under a Content-Length that promises
    more, then closes the connection; ``drop`` closes it without answering.
    ``delay`` ends early when the server shuts down.
    """

    status: int = 200
    json: Any = None
    body: bytes | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    fault: Fault = "none"

    @classmethod
    def html(cls, status: int = 502, page: str | None = None) -> Reply:
        """A proxy's HTML error page (not JSON)."""
        page = page or (
            "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
            "<center><h1>502 Bad Gateway</h1></center>\n"
            + "<hr><center>nginx</center>\n" * 40
            + "</body>\n</html>\n"
        )
        return cls(status=status, body=page.encode(), content_type="text/html")

    @classmethod
    def malformed(cls, status: int = 200) -> Reply:
        """JSON cut short, with an honest Content-Length."""
        return cls(status=status, body=b'{"id": "x", "choices": [{"index": 0, "mess')

    @classmethod
    def truncated(cls, status: int = 200) -> Reply:
        """A body the connection drops halfway through."""
        return cls(status=status, fault="truncate")

    @classmethod
    def dropped(cls) -> Reply:
        """The connection closes before any response."""
        return cls(fault="drop")

    @classmethod
    def stalled(cls, seconds: float = 30.0) -> Reply:
        """No answer for ``seconds`` (or until the server stops)."""
        return cls(delay=seconds)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    #: The client's (address, port): one per connection, so reuse shows.
    peer: tuple[str, int] | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeServer:
    """Base of the fakes; subclasses add routes, validation and wire shapes.

    ``api_key`` is the only key the server accepts (``None``: no key is
    required, like a local OpenAI-compatible server).  ``models`` are the
    model ids it knows; others get the provider's 404.  ``text`` is the
    default reply; it honours ``max_tokens`` (one word a token, finish
    ``length``) and stop sequences (cut before the first match).
    """

    provider_type: ClassVar[str] = ""
    default_model: ClassVar[str] = ""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key-0123456789",
        models: Iterable[str] | None = None,
        text: str = "Hello! This is a fake reply.",
    ) -> None:
        self.api_key = api_key
        self.models = list(models) if models is not None else [self.default_model]
        self.text = text
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._port = 0
        self._served = 0

    # Life cycle.

    async def start(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        # handler_cancellation: a client that gives up must not leave a
        # stalled handler behind; the short shutdown keeps teardown quick.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._closing = asyncio.Event()
        return self

    async def aclose(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` a config uses for this server (the SDK's convention)."""
        return self.root

    def provider_config(self, **overrides: Any) -> ProviderConfig:
        """A config entry pointing at this server with the accepted key."""
        values: dict[str, Any] = {
            "id": f"fake-{self.provider_type}",
            "type": self.provider_type,
            "model": self.models[0],
            "api_key": Secret(self.api_key) if self.api_key is not None else None,
            "base_url": self.base_url,
            "timeout": 5.0,
        }
        values.update(overrides)
        return ProviderConfig(**values)

    # Scripting.

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then as by default."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    def last(self) -> Received:
        """The most recent request."""
        return self.requests[-1]

    def next_id(self) -> int:
        self._served += 1
        return self._served

    # Subclass hooks.

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def validate(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply | None:
        """The provider's error for a wrong request, or ``None`` if it is fine."""
        raise NotImplementedError

    def answer(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply:
        """The provider's answer to a valid request."""
        raise NotImplementedError

    # Request handling.

    async def handle(
        self, request: web.Request, endpoint: Endpoint, model: str | None = None
    ) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=await request.read(),
            peer=_peer(request),
        )
        self.requests.append(received)
        error = self.validate(endpoint, received, model)
        if error is not None:
            return await self._send(request, error)
        reply = self._script.popleft() if self._script else Reply()
        if reply.json is None and reply.body is None and reply.fault != "drop":
            normal = self.answer(endpoint, received, model)
            reply = Reply(
                status=reply.status if reply.status != 200 else normal.status,
                json=normal.json,
                headers={**normal.headers, **reply.headers},
                delay=reply.delay,
                fault=reply.fault,
            )
        return await self._send(request, reply)

    async def _send(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay > 0:
            assert self._closing is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
            if self._closing.is_set():
                reply = Reply(fault="drop")
        body = reply.body if reply.body is not None else json.dumps(reply.json).encode()
        if reply.fault == "drop":
            # The transport is already gone when the client hung up first.
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if reply.fault == "truncate":
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.content_type = reply.content_type
            response.content_length = len(body) + 1000
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(
            status=reply.status, body=body, content_type=reply.content_type, headers=reply.headers
        )


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (peer[0], peer[1]) if peer else None


def words(text: str) -> int:
    """The fakes' token count: one token a word."""
    return len(text.split())


def cut(text: str, max_tokens: int | None, stop: Iterable[str]) -> tuple[str, str | None, bool]:
    """The default reply under a token cap and stop strings.

    Returns the text, the stop string that ended it (if any) and whether the
    cap cut it.
    """
    matched = None
    for s in stop:
        at = text.find(s)
        if at >= 0 and (matched is None or at < text.find(matched)):
            matched = s
    if matched is not None:
        text = text[: text.find(matched)]
    if max_tokens is not None and words(text) > max_tokens:
        return " ".join(text.split()[:max_tokens]), None, True
    return text, matched, False


def json_object(request: Received) -> dict[str, Any] | None:
    """The request body as a JSON object, or ``None`` if it is not one."""
    try:
        body = request.json
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
