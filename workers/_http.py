"""The shared base of the HTTP adapters, and the one place failures become errors.

:class:`HttpProvider` owns one lazily opened :class:`~workers._transport.Transport`
per provider (a keep-alive pool of ``max_concurrency`` connections, the
config's ``headers`` merged over the adapter's own).  It sets no timeout of its own: the caller
owns the deadline of each call (the dispatcher's cancel scope of the attempt,
``providers check``'s limit), so one deadline and one message (``no response
within N s``) is all a user sees, for HTTP adapters, the simulated provider
and custom ones alike.  Adapters build bodies and read successful responses; every
failure, whether a transport error, an HTTP status with its body, or a 200
that cannot be used, becomes a :class:`ProviderError` here and only here, much
as httpx's ``map_httpcore_exceptions`` does for httpcore.

An adapter contributes a *classifier*: it reads its provider's error body
(already decoded with the adapter's msgspec decoder) into a :class:`WireError`
that may refine the status table's code (``insufficient_quota`` on a 429 is
``quota_exhausted``) and give a body-level retry hint.  The status table,
retry-after parsing, ``x-should-retry``, key scrubbing and message trimming
(in that order: a trim must never cut a key to a piece the scrub misses) are
common.

Adapters never retry; a ``CancelledError`` always propagates (and closes the
request's connection).  The transport runs on asyncio only, so the HTTP
adapters do too (the simulated provider does not care).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, Generic, TypeVar

import msgspec
from msgspec import Struct

from workers._base import CompletionRequest, CompletionResponse
from workers._errors import RETRYABLE_CODES, ErrorCode, ProviderError
from workers._secrets import Secret, mask_url, scrub
from workers._settings import ProviderConfig
from workers._transport import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    InvalidHeader,
    InvalidURL,
    Response,
    Transport,
    TransportError,
)
from workers._types import FinishReason, Message, Usage

T = TypeVar("T")
E = TypeVar("E")


#: HTTP status -> error code, before any classifier refines it.
STATUS_CODES: Final[Mapping[int, ErrorCode]] = MappingProxyType(
    {
        400: "bad_request",
        401: "auth_failed",
        402: "quota_exhausted",
        403: "permission_denied",
        404: "not_found",
        408: "timeout",
        413: "bad_request",
        422: "bad_request",
        429: "rate_limited",
        500: "server_error",
        502: "server_error",
        503: "overloaded",
        504: "server_error",
        529: "overloaded",
    }
)

#: How much of a provider's own error message is kept.
MESSAGE_LIMIT: Final = 500
#: How much of a body that is not JSON (an HTML error page) is shown.
SNIPPET_LIMIT: Final = 200

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
_SPACE = re.compile(r"\s+")


def status_code(status: int) -> ErrorCode:
    """The error code an HTTP status means when the body says nothing finer."""
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if 400 <= status < 500:
        return "bad_request"
    if status >= 500:
        return "server_error"
    return "invalid_response"


def parse_duration_hint(text: str | None) -> float | None:
    """Seconds from a body-level hint: ``"26s"``, ``"1.5s"`` (Gemini's
    ``RetryInfo.retryDelay``) or ``"250ms"``; ``None`` if it is not one."""
    if not text:
        return None
    match = _DURATION.match(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asks us to wait, from its headers, or ``None``.

    ``retry-after-ms`` wins, then ``retry-after`` as seconds, then
    ``retry-after`` as an HTTP date (a date in the past means 0), the order
    the official OpenAI and Anthropic SDKs use.  Nonsense values are ignored.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        seconds = _finite_non_negative(ms)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite_non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def _finite_non_negative(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def snippet(raw: bytes, limit: int = SNIPPET_LIMIT, secrets: Iterable[Secret | None] = ()) -> str:
    """The start of a body as one line: whitespace collapsed, scrubbed of ``secrets``, cut
    to at most ``limit`` chars (scrubbed first, so the cut cannot leave part of a key)."""
    text = _SPACE.sub(" ", raw[: limit * 4].decode("utf-8", "replace")).strip()
    return _cut(scrub(text, secrets), limit)


def split_system(request: CompletionRequest) -> tuple[str | None, tuple[Message, ...]]:
    """The system prompt and the user/assistant turns of a request.

    ``system`` messages left in ``messages`` are joined onto the system
    prompt, so providers that take it only at the top level still get it.
    """
    parts = [request.system] if request.system else []
    turns = []
    for message in request.messages:
        if message.role == "system":
            parts.append(message.content)
        else:
            turns.append(message)
    return ("\n\n".join(parts) if parts else None), tuple(turns)


class WireError(Struct, frozen=True, kw_only=True):
    """What a classifier read from one provider's error body."""

    #: The provider's own text, untrimmed and unscrubbed (the base does both).
    message: str | None = None
    #: The provider's name for the error (``rate_limit_error``, ``RESOURCE_EXHAUSTED``).
    kind: str | None = None
    #: A finer code than the status table gives, or ``None`` to keep the table's.
    code: ErrorCode | None = None
    #: A retry hint from the body, as ``"26s"`` or ``"250ms"``.
    retry_delay: str | None = None


class HttpProvider(Generic[E]):
    """One HTTP provider: session, requests, and failure mapping.

    Subclasses set :attr:`provider_type` and :attr:`default_base_url`,
    implement :meth:`_auth_headers` and :meth:`_classify`, and pass their
    error-body decoder to ``__init__``.
    """

    provider_type: str = ""
    default_base_url: str = ""

    def __init__(self, config: ProviderConfig, error_decoder: msgspec.json.Decoder[E]) -> None:
        self._config = config
        self._error_decoder = error_decoder
        self._base_url = (config.base_url or self.default_base_url).rstrip("/")
        self._transport: Transport | None = None

    @property
    def id(self) -> str:
        return self._config.id

    @property
    def type(self) -> str:
        return self.provider_type

    @property
    def model(self) -> str:
        return self._config.model

    def __repr__(self) -> str:
        # Deliberately no headers, no key and no password of the base URL:
        # only what identifies the provider.
        return (
            f"{type(self).__name__}(id={self.id!r}, model={self.model!r}, "
            f"base_url={mask_url(self._base_url)!r})"
        )

    # Adapter hooks.

    def _auth_headers(self) -> dict[str, str]:
        """Headers that carry the key (and any other headers the API requires)."""
        raise NotImplementedError

    def _classify(self, status: int, body: E) -> WireError:
        """Read a decoded error body; the base has already picked a code from the status."""
        raise NotImplementedError

    # Transport.

    def _open_transport(self) -> Transport:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self._auth_headers())
        # Config headers come last so users can set organisation or project
        # headers, or override a default such as Accept.
        headers.update(self._config.headers)
        # No timeout of its own: the caller's deadline is the only one, so two
        # timers never race to report the same stall in different words.
        self._transport = Transport(headers, limit=self._config.max_concurrency)
        return self._transport

    async def aclose(self) -> None:
        """Close every connection; safe to call more than once."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    # Requests.

    async def _post_json(
        self, url: str, body: object, decoder: msgspec.json.Decoder[T]
    ) -> tuple[T, Mapping[str, str]]:
        """POST ``body`` as JSON; the decoded 200 body and the response headers."""
        response = await self._send("POST", url, body=msgspec.json.encode(body))
        return self._decode_ok(response.body, decoder), response.headers

    async def _get_json(
        self, url: str, decoder: msgspec.json.Decoder[T], params: Mapping[str, str] | None = None
    ) -> T:
        """GET ``url``; the decoded 200 body."""
        response = await self._send("GET", url, params=params)
        return self._decode_ok(response.body, decoder)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """One request: the response to it if 2xx, else a ``ProviderError``."""
        transport = self._transport or self._open_transport()
        try:
            response = await transport.request(method, url, body=body, params=params)
        except TransportError as exc:
            raise self._transport_error(exc) from None
        except TimeoutError:
            # Not a deadline of ours (the caller's cancel scope raises
            # CancelledError, which never lands here): the operating system
            # gave up on the connection.
            raise self._fail("timeout", "the connection timed out") from None
        except OSError as exc:
            raise self._fail("connection_error", f"{type(exc).__name__}: {exc}") from None
        if response.status >= 300:
            raise self._status_error(response)
        return response

    def _decode_ok(self, raw: bytes, decoder: msgspec.json.Decoder[T]) -> T:
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            # ValidationError is a DecodeError: a body of the wrong shape is as
            # useless as one that is not JSON.
            raise self._fail(
                "invalid_response", f"HTTP 200 with an unusable body: {exc}", status=200
            ) from None

    # The one mapping from failures to ProviderError.

    def _transport_error(self, exc: TransportError) -> ProviderError:
        if isinstance(exc, InvalidURL):
            return self._fail(
                "bad_request", f"invalid URL: {exc.url} ({exc.reason})", retryable=False
            )
        if isinstance(exc, InvalidHeader):
            return self._fail("bad_request", str(exc), retryable=False)
        if isinstance(exc, ConnectFailed):
            # A refused certificate is a setting to fix (docs/providers.md, TLS),
            # not a fault that goes away on its own.
            # The operating system's connect timeout on every address is a
            # timeout, as it was when it came through as a bare TimeoutError.
            code: ErrorCode = (
                "timeout" if isinstance(exc.os_error, TimeoutError) else "connection_error"
            )
            return self._fail(code, str(exc), retryable=not exc.certificate)
        if isinstance(exc, Disconnected):
            if exc.stage == "body":
                # A body cut short by the transport is a broken connection, not
                # a bad answer: the same request may well succeed when tried again.
                message = f"the connection closed before the whole HTTP {exc.status} body arrived"
            elif exc.stage == "head":
                message = "the connection closed in the middle of the response head"
            else:
                message = "the server closed the connection without answering"
            return self._fail("connection_error", message, status=exc.status)
        if isinstance(exc, BadResponse):
            status = f"HTTP {exc.status}: " if exc.status is not None else ""
            return self._fail("connection_error", f"{status}{exc.reason}", status=exc.status)
        return self._fail("connection_error", str(exc))

    def _status_error(self, response: Response) -> ProviderError:
        status, headers, raw = response.status, response.headers, response.body
        code = status_code(status)
        wire: WireError | None = None
        try:
            body = self._error_decoder.decode(raw)
        except msgspec.DecodeError:
            pass
        else:
            wire = self._classify(status, body)
        if wire is not None and wire.code is not None:
            code = wire.code
        retry_after = parse_retry_after(headers)
        if retry_after is None and wire is not None:
            retry_after = parse_duration_hint(wire.retry_delay)
        retryable = code in RETRYABLE_CODES
        should_retry = headers.get("x-should-retry", "").strip().lower()
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        key = [self._config.api_key]
        if wire is not None and wire.message:
            kind = f" {wire.kind}" if wire.kind else ""
            # Only a window of a long message is scrubbed, then cut: cost stays
            # bounded, and a key split by the window keeps fewer than MIN_RUN
            # characters inside it.
            text = scrub(wire.message.strip()[: 2 * MESSAGE_LIMIT], key)
            message = f"HTTP {status}{kind}: {_cut(text, MESSAGE_LIMIT)}"
        elif not raw.strip():
            message = f"HTTP {status} with an empty body"
        else:
            shown = snippet(raw, secrets=key)
            content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
            message = (
                f"HTTP {status} with a non-JSON body ({content_type or 'no Content-Type'}): {shown}"
            )
        return self._fail(
            code, message, status=status, retryable=retryable, retry_after=retry_after
        )

    def _fail(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> ProviderError:
        """A ``ProviderError`` for this provider, its message scrubbed of the key."""
        return ProviderError(
            code,
            scrub(message, [self._config.api_key]),
            provider=self.id,
            retryable=retryable,
            retry_after=retry_after,
            status=status,
        )

    def _respond(
        self,
        *,
        text: str | None,
        finish_reason: FinishReason,
        usage: Usage,
        model: str | None,
        response_id: str | None,
    ) -> CompletionResponse:
        """The normalised response; a natural stop with no text at all is unusable."""
        if text is None and finish_reason == "stop":
            raise self._fail(
                "invalid_response", "HTTP 200 but the response holds no text", status=200
            )
        return CompletionResponse(
            text=text or "",
            finish_reason=finish_reason,
            usage=usage,
            model=model or self._config.model,
            response_id=response_id,
        )


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters; only ever applied to scrubbed text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
