"""No key leaks: every adapter, every success and error path.

Each adapter gets its own unique key.  The fakes are made to echo that key
back in error bodies (JSON messages, HTML pages, plain text) on top of every
cell of the fault matrix, and the test looks for the key, and for the half
of it ``scrub`` also hides, in every captured log record, the exception's
str, repr and traceback text, the stored error record, the provider's repr
and every response.  aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

import io
import logging
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from runner import ErrorInfo, Message, ProviderError, Runner, Task
from runner.cli._providers import check_providers
from runner.config import Config, CooldownConfig, ProviderConfig
from runner.metrics import MemorySink
from tests.fakes import FakeAnthropic, FakeGoogle, FakeOpenAI, FakeServer, Reply, error_info
from tests.fakes.faults import FAKES, HTTP_PROVIDERS, MATRIX
from workers._base import CompletionRequest
from workers._factory import open_provider
from workers._http import MESSAGE_LIMIT
from workers._parameters import Parameters
from workers._secrets import Secret, scrub

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


def _random_key() -> str:
    """A key of random characters only (a provider's name in it would match its id)."""
    return f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex[:12]}"


def _runs(key: str) -> set[str]:
    """Every run of 8 characters of ``key``: none may appear in any output."""
    return {key[i : i + 8] for i in range(len(key) - 7)}


def _assert_no_run(key: str, text: str) -> None:
    leaked = [run for run in _runs(key) if run in text]
    assert not leaked, f"{leaked[0]!r} of the key is in {text!r}"


def test_scrub_removes_every_run_of_8_characters_of_a_key_at_every_offset() -> None:
    """Any substring of 8+ characters of the key goes, wherever it sits; shorter bits stay."""
    key = _random_key()
    for start in range(len(key) - 7):
        for end in range(start + 8, len(key) + 1):
            for offset in (0, 1, 7, 50):
                text = "x" * offset + key[start:end] + " tail"
                scrubbed = scrub(text, [Secret(key)])
                _assert_no_run(key, scrubbed)
                assert scrubbed == "x" * offset + "*** tail"
    assert scrub(f"{key[:7]} and {key[-7:]}", [key]) == f"{key[:7]} and {key[-7:]}"
    assert scrub("short key abcde here", ["abcde"]) == "short key *** here"
    assert scrub("two: A1B2C3D4E5F6 and A1B2C3D4E5F6.", ["A1B2C3D4E5F6"]) == "two: *** and ***."


@pytest.mark.parametrize("provider_type", HTTP_PROVIDERS)
async def test_a_key_echoed_at_any_offset_never_survives_the_trim(provider_type: str) -> None:
    """An error message or page echoing the key at every offset: no 8-character run survives.

    Trimming used to come first, so a key straddling the 500-character cut
    left up to the cut's worth of its start in the message.
    """
    key = _random_key()
    async with FAKES[provider_type](api_key=key) as fake:
        provider = open_provider(fake.provider_config(api_key=Secret(key)))
        try:
            for offset in range(MESSAGE_LIMIT + 2 * len(key)):
                echoed = "e" * offset + key + " (do not share it)"
                fake.script(
                    _echo_message(fake, echoed),
                    Reply(status=502, body=echoed.encode(), content_type="text/plain"),
                )
                for _ in range(2):
                    with pytest.raises(ProviderError) as caught:
                        await provider.complete(_request())
                    for text in _error_texts(caught.value):
                        _assert_no_run(key, text)
        finally:
            await provider.aclose()


def _echo_message(fake: FakeServer, message: str) -> Reply:
    """A 401 in ``fake``'s own error shape whose message is ``message``."""
    if isinstance(fake, FakeAnthropic):
        return FakeAnthropic.error(401, "authentication_error", message)
    if isinstance(fake, FakeGoogle):
        return FakeGoogle.error(400, message, details=[error_info("API_KEY_INVALID")])
    return FakeOpenAI.error(401, message, code="invalid_api_key")


async def test_providers_check_shows_no_run_of_a_key_cut_at_the_trim() -> None:
    """providers check, the key straddling the message limit: no 8-character run of it shows."""
    key = _random_key()
    async with FakeOpenAI(api_key=key) as fake:
        for offset in range(MESSAGE_LIMIT - len(key), MESSAGE_LIMIT + 1):
            fake.script(FakeOpenAI.error(401, "e" * offset + key, code="invalid_api_key"))
            config = Config(providers=(fake.provider_config(),), default_provider="fake-openai")
            (result,) = await check_providers(config, 5)
            assert result.outcome == "auth_failed"
            _assert_no_run(key, result.detail)


async def test_a_result_metric_and_log_hold_no_run_of_a_key_cut_at_the_trim() -> None:
    """Through the Runner: the result line, metric events and log carry no 8-character run."""
    key = _random_key()
    log = io.StringIO()
    sink = MemorySink()
    async with FakeOpenAI(api_key=key) as fake:
        config = Config(
            providers=(fake.provider_config(),),
            default_provider="fake-openai",
            cooldown=CooldownConfig(failures=1000),  # every attempt must reach the fake
        )
        async with Runner.from_config(config, metrics=sink, log_stream=log) as runner:
            for offset in range(MESSAGE_LIMIT - len(key), MESSAGE_LIMIT + 1):
                fake.script(FakeOpenAI.error(401, "e" * offset + key, code="invalid_api_key"))
                result = await runner.run(Task(prompt="hi"))
                assert result.status == "failed"
                _assert_no_run(key, msgspec.json.encode(result).decode())
    assert len(sink.events) == len(range(MESSAGE_LIMIT - len(key), MESSAGE_LIMIT + 1))
    _assert_no_run(key, msgspec.json.encode(sink.events).decode())
    _assert_no_run(key, log.getvalue())


def test_a_providers_repr_masks_the_password_of_its_base_url() -> None:
    """user:password@ in base_url (sent as basic auth) shows as ***@ in the provider's repr."""
    config = ProviderConfig(
        id="local",
        type="openai",
        model="m",
        api_key=Secret("sk-unused-key-123"),
        base_url="http://me:p@ss-hunter2@localhost:8000/v1",
    )
    assert repr(open_provider(config)) == (
        "OpenAIProvider(id='local', model='m', base_url='http://***@localhost:8000/v1')"
    )
