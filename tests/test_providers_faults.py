"""The fault matrix: every error kind x every HTTP provider -> code, retryable, retry_after.

Each cell drives a real adapter against its fake server (or a closed port)
and checks the ``ProviderError`` the one mapping in ``workers._http``
produces.  A cell is ``None`` where the provider has no such error.
aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from runner._errors import ProviderError
from runner._parameters import Parameters
from runner._secrets import Secret
from runner._task import Message
from tests.fakes import (
    FakeAnthropic,
    FakeGoogle,
    FakeOpenAI,
    FakeServer,
    Reply,
    error_info,
    quota_failure,
    retry_info,
)
from workers._base import CompletionRequest
from workers._factory import open_provider
from workers._http import parse_duration_hint, parse_retry_after, snippet, status_code

pytestmark = pytest.mark.anyio

HTTP_PROVIDERS = ["openai", "anthropic", "google"]
FAKES: dict[str, type[FakeServer]] = {
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "google": FakeGoogle,
}

OA, AN, GO = FakeOpenAI, FakeAnthropic, FakeGoogle


@dataclass(frozen=True)
class Cell:
    """One expected mapping: the scripted reply (or setup) and the error it must become."""

    code: str
    retryable: bool
    retry_after: Any = None
    reply: Callable[[Any], Reply] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    refused: bool = False


def _date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


RL = {"retry-after": "2"}
MS = {"retry-after-ms": "1500", "retry-after": "9"}

MATRIX: dict[str, dict[str, Cell | None]] = {
    "429 retry-after seconds": {
        "openai": Cell(
            "rate_limited",
            True,
            2.0,
            lambda f: OA.error(
                429, "Rate limit reached", type="requests", code="rate_limit_exceeded", headers=RL
            ),
        ),
        "anthropic": Cell(
            "rate_limited",
            True,
            2.0,
            lambda f: AN.error(429, "rate_limit_error", "Too many requests", headers=RL),
        ),
        "google": Cell(
            "rate_limited", True, 2.0, lambda f: GO.error(429, "Quota exceeded", headers=RL)
        ),
    },
    "429 retry-after-ms wins": {
        p: Cell("rate_limited", True, 1.5, lambda f: type(f).error(429, *_args(f), headers=MS))
        for p in HTTP_PROVIDERS
    },
    "429 retry-after HTTP date": {
        p: Cell(
            "rate_limited",
            True,
            pytest.approx(3600, abs=120),
            lambda f: type(f).error(429, *_args(f), headers={"retry-after": _date(3600)}),
        )
        for p in HTTP_PROVIDERS
    },
    "429 retry-after date in the past": {
        p: Cell(
            "rate_limited",
            True,
            0.0,
            lambda f: type(f).error(429, *_args(f), headers={"retry-after": _date(-3600)}),
        )
        for p in HTTP_PROVIDERS
    },
    "429 hint in the body": {
        "openai": Cell(
            "rate_limited",
            True,
            1.574,
            lambda f: OA.error(
                429,
                "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000. "
                "Please try again in 1.574s. Visit https://platform.openai.com/account/rate-limits",
                type="tokens",
                code="rate_limit_exceeded",
            ),
        ),
        "anthropic": Cell(
            "rate_limited", True, None, lambda f: AN.error(429, "rate_limit_error", "Slow down")
        ),
        "google": Cell(
            "rate_limited",
            True,
            26.0,
            lambda f: GO.error(
                429,
                "You exceeded your current quota. Please retry in 26.04s.",
                details=[
                    quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
                    retry_info("26s"),
                ],
            ),
        ),
    },
    "429 quota or spend cap": {
        "openai": Cell(
            "quota_exhausted",
            False,
            None,
            lambda f: OA.error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type="insufficient_quota",
                code="insufficient_quota",
            ),
        ),
        "anthropic": Cell(
            "quota_exhausted",
            False,
            None,
            lambda f: AN.error(
                429,
                "rate_limit_error",
                "You have reached your specified workspace API usage limits.",
                error_code="enforced_spend_limit_reached",
            ),
        ),
        "google": Cell(
            "quota_exhausted",
            False,
            1.5,
            lambda f: GO.error(
                429,
                "You exceeded your current quota.",
                details=[
                    quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                    retry_info("1.5s"),
                ],
            ),
        ),
    },
    "402 billing": {
        "openai": None,
        "anthropic": Cell(
            "quota_exhausted",
            False,
            None,
            lambda f: AN.error(402, "billing_error", "Your credit balance is too low."),
        ),
        "google": None,
    },
    "overloaded (503 / Anthropic 529)": {
        "openai": Cell(
            "overloaded",
            True,
            None,
            lambda f: OA.error(
                503,
                "The engine is currently overloaded, please try again later",
                type="server_error",
            ),
        ),
        "anthropic": Cell(
            "overloaded",
            True,
            3.0,
            lambda f: AN.error(529, "overloaded_error", "Overloaded", headers={"retry-after": "3"}),
        ),
        "google": Cell(
            "overloaded",
            True,
            None,
            lambda f: GO.error(503, "The model is overloaded. Please try again later."),
        ),
    },
    "x-should-retry: false": {
        p: Cell(
            "overloaded",
            False,
            None,
            lambda f: Reply(status=503, body=b"busy", headers={"x-should-retry": "false"}),
        )
        for p in HTTP_PROVIDERS
    },
    "500 server error": {
        "openai": Cell(
            "server_error",
            True,
            None,
            lambda f: OA.error(500, "The server had an error", type="server_error"),
        ),
        "anthropic": Cell(
            "server_error",
            True,
            None,
            lambda f: AN.error(500, "api_error", "Internal server error"),
        ),
        "google": Cell(
            "server_error", True, None, lambda f: GO.error(500, "An internal error has occurred.")
        ),
    },
    "502 HTML page": {
        p: Cell("server_error", True, None, lambda f: Reply.html(502)) for p in HTTP_PROVIDERS
    },
    "500 plain text": {
        p: Cell(
            "server_error",
            True,
            None,
            lambda f: Reply(status=500, body=b"Internal Server Error", content_type="text/plain"),
        )
        for p in HTTP_PROVIDERS
    },
    "503 empty body": {
        p: Cell("overloaded", True, None, lambda f: Reply(status=503, body=b""))
        for p in HTTP_PROVIDERS
    },
    "504 gateway timeout": {
        "openai": Cell("server_error", True, None, lambda f: Reply.html(504, "<h1>504</h1>")),
        "anthropic": Cell(
            "timeout", True, None, lambda f: AN.error(504, "timeout_error", "Request timed out")
        ),
        "google": Cell(
            "timeout", True, None, lambda f: GO.error(504, "Deadline expired before operation")
        ),
    },
    "408 request timeout": {
        p: Cell("timeout", True, None, lambda f: type(f).error(408, *_args(f)))
        for p in HTTP_PROVIDERS
    },
    "bad key": {
        p: Cell("auth_failed", False, None, config={"api_key": Secret("wrong-key-abcdefgh")})
        for p in HTTP_PROVIDERS
    },
    "no key": {
        p: Cell("auth_failed", False, None, config={"api_key": None}) for p in HTTP_PROVIDERS
    },
    "403 permission": {
        "openai": Cell(
            "permission_denied",
            False,
            None,
            lambda f: OA.error(
                403,
                "Country, region, or territory not supported",
                type="request_forbidden",
                code="unsupported_country_region_territory",
            ),
        ),
        "anthropic": Cell(
            "permission_denied",
            False,
            None,
            lambda f: AN.error(403, "permission_error", "Your API key does not have permission"),
        ),
        "google": Cell(
            "permission_denied",
            False,
            None,
            lambda f: GO.error(
                403,
                "Permission denied: Consumer has been suspended.",
                details=[error_info("CONSUMER_SUSPENDED")],
            ),
        ),
    },
    "unknown model (404)": {
        p: Cell("not_found", False, None, config={"model": "no-such-model"}) for p in HTTP_PROVIDERS
    },
    "400 bad request": {
        p: Cell("bad_request", False, None, lambda f: type(f).error(400, *_args(f)))
        for p in HTTP_PROVIDERS
    },
    "413 too large": {
        p: Cell("bad_request", False, None, lambda f: type(f).error(413, *_args(f)))
        for p in HTTP_PROVIDERS
    },
    "422 unprocessable": {
        p: Cell("bad_request", False, None, lambda f: type(f).error(422, *_args(f)))
        for p in HTTP_PROVIDERS
    },
    "context length": {
        "openai": Cell(
            "context_length_exceeded",
            False,
            None,
            lambda f: OA.error(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130000 tokens.",
                param="messages",
                code="context_length_exceeded",
            ),
        ),
        "anthropic": Cell(
            "context_length_exceeded",
            False,
            None,
            lambda f: AN.error(
                400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
            ),
        ),
        "google": Cell(
            "context_length_exceeded",
            False,
            None,
            lambda f: GO.error(
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed "
                "(1048576).",
            ),
        ),
    },
    "200 malformed JSON": {
        p: Cell("invalid_response", False, None, lambda f: Reply.malformed())
        for p in HTTP_PROVIDERS
    },
    "200 wrong shape": {
        p: Cell("invalid_response", False, None, lambda f: Reply(json={"unexpected": True}))
        for p in HTTP_PROVIDERS
    },
    "200 without text": {
        p: Cell("invalid_response", False, None, lambda f: f.completion(None))
        for p in HTTP_PROVIDERS
    },
    "200 prompt blocked": {
        "openai": None,
        "anthropic": None,
        "google": Cell("content_filtered", False, None, lambda f: f.blocked("SAFETY")),
    },
    "200 truncated body": {
        p: Cell("connection_error", True, None, lambda f: Reply.truncated()) for p in HTTP_PROVIDERS
    },
    "connection dropped": {
        p: Cell("connection_error", True, None, lambda f: Reply.dropped()) for p in HTTP_PROVIDERS
    },
    "connection refused": {
        p: Cell("connection_error", True, None, refused=True) for p in HTTP_PROVIDERS
    },
    "server stalls past the timeout": {
        p: Cell("timeout", True, None, lambda f: Reply.stalled(30), config={"timeout": 0.2})
        for p in HTTP_PROVIDERS
    },
}


def _args(fake: FakeServer) -> tuple[str, ...]:
    """Arguments for ``error(status, ...)`` that give a plain error of each shape."""
    if isinstance(fake, FakeAnthropic):
        return ("invalid_request_error", "Something is wrong with the request")
    return ("Something is wrong with the request",)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


CASES = [
    pytest.param(kind, provider, cell, id=f"{kind} x {provider}")
    for kind, row in MATRIX.items()
    for provider, cell in row.items()
    if cell is not None
]


def _request() -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content="hello"),), parameters=Parameters(max_tokens=50)
    )


@pytest.mark.parametrize(("kind", "provider_type", "cell"), CASES)
async def test_fault_matrix(kind: str, provider_type: str, cell: Cell) -> None:
    """Each fault becomes the right code, retryable flag and retry-after hint."""
    async with FAKES[provider_type]() as fake:
        overrides = dict(cell.config)
        if cell.refused:
            root = f"http://127.0.0.1:{_closed_port()}"
            overrides["base_url"] = root + ("/v1" if provider_type == "openai" else "")
        config = fake.provider_config(**overrides)
        if cell.reply is not None:
            fake.script(cell.reply(fake))
        provider = open_provider(config)
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(_request())
        finally:
            await provider.aclose()
    error = caught.value
    assert (error.code, error.retryable, error.retry_after) == (
        cell.code,
        cell.retryable,
        cell.retry_after,
    )
    assert error.provider == config.id
    assert 0 < len(error.message) <= 600
    assert "\n" not in error.message


async def test_every_kind_covers_every_http_provider() -> None:
    """The matrix has a row for every HTTP provider in every kind (None where n/a)."""
    for row in MATRIX.values():
        assert sorted(row) == sorted(HTTP_PROVIDERS)


async def test_html_body_is_summarised_not_dumped() -> None:
    """A proxy's HTML page is named as such and only its start is kept, on one line."""
    async with FakeOpenAI() as fake:
        fake.script(Reply.html(502))
        provider = open_provider(fake.provider_config())
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(_request())
        finally:
            await provider.aclose()
    message = caught.value.message
    assert message.startswith("HTTP 502 with a non-JSON body (text/html): <html> <head><title>")
    assert len(message) < 300
    assert caught.value.status == 502


async def test_provider_error_text_names_the_status_and_kind() -> None:
    """An error body's own message is kept, prefixed by the status and the provider's kind."""
    async with FakeAnthropic() as fake:
        fake.script(FakeAnthropic.error(529, "overloaded_error", "Overloaded"))
        provider = open_provider(fake.provider_config())
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(_request())
        finally:
            await provider.aclose()
    assert str(caught.value) == "fake-anthropic: overloaded: HTTP 529 overloaded_error: Overloaded"


async def test_credential_check_maps_errors_the_same_way() -> None:
    """The models endpoint goes through the same mapping (a 503 is overloaded, retryable)."""
    async with FakeGoogle() as fake:
        fake.script(FakeGoogle.error(503, "The model is overloaded."))
        provider = open_provider(fake.provider_config())
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.check_credentials()
        finally:
            await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("overloaded", True)


async def test_cancellation_propagates_and_is_not_mapped() -> None:
    """Cancelling an attempt cancels it: no ProviderError, the scope sees the cancellation."""
    async with FakeOpenAI() as fake:
        fake.script(Reply.stalled(30))
        provider = open_provider(fake.provider_config())
        try:
            with anyio.move_on_after(0.1) as scope:
                await provider.complete(_request())
        finally:
            await provider.aclose()
    assert scope.cancelled_caught


async def test_session_is_reused_across_requests() -> None:
    """One session per provider: consecutive requests share it."""
    async with FakeOpenAI() as fake:
        provider = open_provider(fake.provider_config())
        try:
            await provider.complete(_request())
            first = provider._session  # type: ignore[attr-defined]
            await provider.complete(_request())
            assert provider._session is first  # type: ignore[attr-defined]
        finally:
            await provider.aclose()


# The pure helpers of the mapping.


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.05"}, 0.05),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "nonsense", "retry-after": "9"}, 9.0),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2026 07:27:00 GMT"}, 0.0),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
    ],
)
async def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms wins, then seconds, then an HTTP date (the past is 0); junk is ignored."""
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2026 07:28:00 GMT").timestamp()
    assert parse_retry_after(headers, now=lambda: now) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("26s", 26.0), ("1.5s", 1.5), ("250ms", 0.25), ("", None), (None, None), ("soon", None)],
)
async def test_parse_duration_hint(text: str | None, expected: float | None) -> None:
    """Body hints such as Gemini's retryDelay are read as seconds."""
    assert parse_duration_hint(text) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [(418, "bad_request"), (409, "bad_request"), (599, "server_error"), (529, "overloaded")],
)
async def test_status_table_fallbacks(status: int, expected: str) -> None:
    """Statuses outside the table fall back by class: 4xx bad_request, 5xx server_error."""
    assert status_code(status) == expected


async def test_snippet_collapses_whitespace_and_trims() -> None:
    """A body snippet is one line and at most the limit long."""
    assert snippet(b"<p>\n  a \t b</p>") == "<p> a b</p>"
    assert len(snippet(b"x" * 1000)) == 200
