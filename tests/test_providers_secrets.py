"""No key leaks: every adapter, every success and error path.

Each adapter gets its own unique key.  The fakes are made to echo that key
back in error bodies (JSON messages, HTML pages, plain text) on top of every
cell of the fault matrix, and the test looks for the key, and for the half
of it ``scrub`` also hides, in every captured log record, the exception's
str, repr and traceback text, the stored error record, the provider's repr
and every response.  aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from runner._errors import ProviderError
from runner._task import ErrorInfo, Message
from runner.cli._providers import check_providers
from runner.config._model import Config, ProviderConfig
from tests.fakes import FakeAnthropic, FakeGoogle, FakeOpenAI, FakeServer, Reply, error_info
from tests.fakes.faults import FAKES, HTTP_PROVIDERS, MATRIX
from workers._base import CompletionRequest
from workers._factory import open_provider
from workers._parameters import Parameters
from workers._secrets import Secret

pytestmark = pytest.mark.anyio


def _unique_key(provider_type: str) -> str:
    return f"{provider_type}-key-{uuid.uuid4().hex}"


def _echoes(key: str) -> list[Callable[[FakeServer], Reply]]:
    """Error replies that carry the key back, in each shape a provider might use."""

    def json_echo(fake: FakeServer) -> Reply:
        if isinstance(fake, FakeAnthropic):
            return FakeAnthropic.error(401, "authentication_error", f"invalid x-api-key {key}")
        if isinstance(fake, FakeGoogle):
            return FakeGoogle.error(
                400, f"API key {key} not valid.", details=[error_info("API_KEY_INVALID")]
            )
        return FakeOpenAI.error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")

    return [
        json_echo,
        lambda f: Reply.html(502, f"<html><body>bad gateway for key={key}</body></html>"),
        lambda f: Reply(
            status=500, body=f"upstream said: {key}".encode(), content_type="text/plain"
        ),
        lambda f: Reply(status=429, json={"error": {"message": f"slow down {key[:20]}"}}),
        lambda f: Reply(status=200, body=f'{{"text": "{key}'.encode()),
    ]


def _request() -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content="hello"),),
        parameters=Parameters(max_tokens=20),
    )


def _assert_clean(key: str, texts: list[str]) -> None:
    half = key[: len(key) // 2]
    for text in texts:
        assert key not in text
        assert half not in text


def _error_texts(error: ProviderError) -> list[str]:
    info = ErrorInfo(
        code=error.code, message=error.message, provider=error.provider, retryable=error.retryable
    )
    return [
        str(error),
        repr(error),
        error.message,
        "".join(traceback.format_exception(error)),
        msgspec.json.encode(info).decode(),
    ]


@pytest.mark.parametrize("provider_type", HTTP_PROVIDERS)
async def test_no_path_leaks_the_key(provider_type: str, caplog: pytest.LogCaptureFixture) -> None:
    """Success, every fault-matrix cell and every echo of the key leave no trace of it."""
    caplog.set_level(logging.DEBUG)
    key = _unique_key(provider_type)
    texts: list[str] = []
    errors = 0
    async with FAKES[provider_type](api_key=key) as fake:

        async def attempt(config: ProviderConfig, reply: Reply | None) -> None:
            nonlocal errors
            if reply is not None:
                fake.script(reply)
            provider = open_provider(config)
            texts.append(repr(provider))
            try:
                response = await provider.complete(_request())
                texts.extend([repr(response), msgspec.json.encode(response).decode()])
                await provider.check_credentials()
            except ProviderError as exc:
                errors += 1
                texts.extend(_error_texts(exc))
            finally:
                await provider.aclose()

        base = fake.provider_config(api_key=Secret(key))
        texts.append(repr(base))
        await attempt(base, None)
        for row in MATRIX.values():
            cell = row[provider_type]
            if cell is None:
                continue
            overrides: dict[str, Any] = dict(cell.config)
            # Whatever key a cell tries, the configured key is this test's key;
            # a "bad key" cell makes the fake want another one instead.
            overrides["api_key"] = Secret(key)
            if "api_key" in cell.config:
                fake.api_key = "the-key-the-server-wants-0000"
            if cell.refused:
                overrides["base_url"] = cell.base_url(provider_type)
            await attempt(
                fake.provider_config(**overrides), cell.reply(fake) if cell.reply else None
            )
            fake.api_key = key
        for echo in _echoes(key):
            await attempt(base, echo(fake))
        sent = [r.headers for r in fake.requests]
    # The key was really used on the wire, so its absence elsewhere means something.
    assert any(key in str(h.values()) for h in sent)
    assert errors >= len(MATRIX) - 3
    records = [r.getMessage() for r in caplog.records] + [caplog.text]
    # Adapters log nothing themselves (runner's one logging path reports failures).
    assert not [r for r in caplog.records if r.name.startswith("workers")]
    _assert_clean(key, texts + records)


async def test_providers_check_details_never_hold_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """providers check shows scrubbed details even when every provider echoes its key."""
    caplog.set_level(logging.DEBUG)
    keys = {t: _unique_key(t) for t in HTTP_PROVIDERS}
    async with (
        FakeOpenAI(api_key=keys["openai"]) as o,
        FakeAnthropic(api_key=keys["anthropic"]) as a,
        FakeGoogle(api_key=keys["google"]) as g,
    ):
        fakes: list[FakeServer] = [o, a, g]
        for fake in fakes:
            fake.script(_echoes(keys[fake.provider_type])[0](fake))
        config = Config(
            providers=tuple(f.provider_config() for f in fakes), default_provider="fake-openai"
        )
        results = await check_providers(config, 5)
    assert [r.outcome for r in results] == ["auth_failed"] * 3
    for result, provider_type in zip(results, HTTP_PROVIDERS, strict=True):
        _assert_clean(keys[provider_type], [result.detail, repr(result), caplog.text])
        assert "***" in result.detail
