"""The fault matrix: every error kind x every HTTP provider -> code, retryable, retry_after.

The matrix itself is ``tests.fakes.faults.MATRIX``.  Each cell drives a real
adapter against its fake server (or a closed port) and checks the
``ProviderError`` the one mapping in ``workers._http`` produces.
aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

import email.utils

import anyio
import pytest

from runner import ErrorInfo, Message, ProviderError, Runner, Task
from runner.config import Config, LoggingConfig, RetryConfig, RoleConfig
from runner.metrics import MemorySink
from tests.fakes import FakeAnthropic, FakeGoogle, FakeOpenAI, Reply
from tests.fakes.faults import FAKES, HTTP_PROVIDERS, MATRIX, Cell
from workers._base import CompletionRequest
from workers._factory import open_provider
from workers._http import parse_duration_hint, parse_retry_after, snippet, status_code
from workers._parameters import Parameters

pytestmark = pytest.mark.anyio

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
            overrides["base_url"] = cell.base_url(provider_type)
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


async def test_adapter_sets_no_deadline_of_its_own() -> None:
    """Past the provider's timeout an adapter alone keeps waiting: the caller owns the deadline."""
    async with FakeOpenAI() as fake:
        fake.script(Reply.stalled(30))
        provider = open_provider(fake.provider_config(timeout=0.05))
        try:
            with anyio.move_on_after(0.5) as scope:
                await provider.complete(_request())
        finally:
            await provider.aclose()
    assert scope.cancelled_caught


@pytest.mark.parametrize("provider_type", HTTP_PROVIDERS)
async def test_stalled_server_is_one_timeout_in_one_wording(provider_type: str) -> None:
    """A call past the provider timeout fails once, as `no response within N s`, with one event."""
    async with FAKES[provider_type]() as fake:
        fake.script(Reply.stalled(30))
        pc = fake.provider_config(timeout=0.2)
        config = Config(
            providers=(pc,),
            roles={"coder": RoleConfig(provider=pc.id)},
            default_provider=pc.id,
            retry=RetryConfig(max_attempts=1),
            logging=LoggingConfig(level="warning"),
        )
        sink = MemorySink()
        async with Runner(config, metrics=sink) as runner:
            result = await runner.run(Task(role="coder", prompt="hello"))
    assert result.status == "failed"
    assert result.error == ErrorInfo(
        code="timeout", message="no response within 0.2 s", provider=pc.id, retryable=True
    )
    assert [(e.provider, e.error_code) for e in sink.events] == [(pc.id, "timeout")]


async def test_connection_is_reused_across_requests() -> None:
    """One kept-alive connection carries consecutive requests (the server sees one peer)."""
    async with FakeOpenAI() as fake:
        provider = open_provider(fake.provider_config())
        try:
            await provider.complete(_request())
            await provider.complete(_request())
            await provider.check_credentials()
        finally:
            await provider.aclose()
    peers = {r.peer for r in fake.requests}
    assert len(fake.requests) == 3
    assert len(peers) == 1
    assert None not in peers


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
