"""``providers check``: every provider's credentials, in parallel, under a deadline.

The HTTP providers are checked against the fake servers; the command line is
driven with simulated providers and closed ports, which need no server.
aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runner.cli import main
from runner.cli._providers import CheckResult, check_providers, render
from runner.config import Config, ProviderConfig
from tests.fakes import FakeAnthropic, FakeGoogle, FakeOpenAI, FakeServer, Reply
from workers._secrets import Secret

pytestmark = pytest.mark.anyio

SIMULATED = ProviderConfig(id="sim", type="simulated")


def _config(*providers: ProviderConfig) -> Config:
    return Config(providers=providers, default_provider=providers[0].id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeServer]]:
    async with FakeOpenAI() as o, FakeAnthropic() as a, FakeGoogle() as g:
        yield [o, a, g]


async def test_good_keys_are_ok(fakes: list[FakeServer]) -> None:
    """Good keys on every provider type, plus the simulated provider, all check ok."""
    config = _config(*(f.provider_config() for f in fakes), SIMULATED)
    results = await check_providers(config, 5)
    assert [(r.provider, r.type, r.outcome) for r in results] == [
        ("fake-openai", "openai", "ok"),
        ("fake-anthropic", "anthropic", "ok"),
        ("fake-google", "google", "ok"),
        ("sim", "simulated", "ok"),
    ]
    assert [r.path for f in fakes for r in f.requests] == [
        "/v1/models",
        "/v1/models",
        "/v1beta/models",
    ]


async def test_bad_keys_are_auth_failed_for_every_type(fakes: list[FakeServer]) -> None:
    """A wrong key is auth_failed for each type, Gemini's 400 API_KEY_INVALID included."""
    bad = Secret("definitely-not-the-key-42")
    config = _config(*(f.provider_config(api_key=bad) for f in fakes))
    results = await check_providers(config, 5)
    assert [r.outcome for r in results] == ["auth_failed"] * 3
    assert results[0].detail.startswith("HTTP 401 invalid_api_key: Incorrect API key provided")
    assert results[1].detail == "HTTP 401 authentication_error: invalid x-api-key"
    assert results[2].detail == (
        "HTTP 400 INVALID_ARGUMENT/API_KEY_INVALID: API key not valid. Please pass a valid API key."
    )
    assert all("definitely-not-the-key-42" not in r.detail for r in results)


async def test_unreachable_port_is_unreachable() -> None:
    """Nothing listening on the port: unreachable, with the address in the detail."""
    port = _closed_port()
    config = _config(
        ProviderConfig(
            id="local",
            type="openai",
            model="llama3.2",
            base_url=f"http://127.0.0.1:{port}/v1",
        )
    )
    [result] = await check_providers(config, 5)
    assert result.outcome == "unreachable"
    assert result.detail == f"cannot connect to 127.0.0.1:{port}: connection refused"


async def test_stalled_servers_time_out_in_parallel(fakes: list[FakeServer]) -> None:
    """Four stalled providers with a 0.5 s limit finish together, well under the sum."""
    second = FakeOpenAI()
    async with second:
        servers = [*fakes, second]
        for fake in servers:
            fake.script(Reply.stalled(30))
        config = _config(*(f.provider_config(id=f"p{i}") for i, f in enumerate(servers)))
        started = time.perf_counter()
        results = await check_providers(config, 0.5)
        total = time.perf_counter() - started
    assert [r.outcome for r in results] == ["timeout"] * 4
    assert all(r.detail == "no response within 0.5 s" for r in results)
    # Not a tight bound (shared machine): only that the checks overlapped.
    assert total < 4 * 0.5


async def test_provider_timeout_shorter_than_the_limit_is_timeout(fakes: list[FakeServer]) -> None:
    """A provider whose own timeout fires first is reported as timeout too."""
    fakes[1].script(Reply.stalled(30))
    config = _config(fakes[1].provider_config(timeout=0.2))
    [result] = await check_providers(config, 5)
    assert (result.outcome, result.detail) == ("timeout", "no response within 0.2 s")


async def test_other_failures_are_error_with_the_code(fakes: list[FakeServer]) -> None:
    """A server error is outcome error, and the detail starts with the error code."""
    fakes[2].script(Reply.html(502))
    fakes[0].script(Reply.malformed())
    config = _config(fakes[2].provider_config(), fakes[0].provider_config())
    results = await check_providers(config, 5)
    assert [r.outcome for r in results] == ["error", "error"]
    assert results[0].detail.startswith("server_error: HTTP 502 with a non-JSON body (text/html)")
    assert results[1].detail.startswith("invalid_response: HTTP 200 with an unusable body")


async def test_mixed_results_keep_config_order(fakes: list[FakeServer]) -> None:
    """Results come back in config order whatever order the checks finish in."""
    fakes[0].script(Reply(delay=0.2))
    config = _config(
        fakes[0].provider_config(), SIMULATED, fakes[1].provider_config(api_key=Secret("x" * 20))
    )
    results = await check_providers(config, 5)
    assert [(r.provider, r.outcome) for r in results] == [
        ("fake-openai", "ok"),
        ("sim", "ok"),
        ("fake-anthropic", "auth_failed"),
    ]


def _results() -> list[CheckResult]:
    return [
        CheckResult(provider="sim", type="simulated", outcome="ok", detail="ok", elapsed=0.001),
        CheckResult(
            provider="claude",
            type="anthropic",
            outcome="auth_failed",
            detail="HTTP 401 authentication_error: invalid x-api-key",
            elapsed=0.25,
        ),
    ]


def test_plain_table_is_aligned() -> None:
    """Off a terminal the table is plain aligned text with a summary line."""
    out = io.StringIO()
    render(_results(), out, rich=False)
    assert out.getvalue().splitlines() == [
        "PROVIDER  TYPE       OUTCOME       TIME  DETAIL",
        "sim       simulated  ok           0.00s  ok",
        "claude    anthropic  auth_failed  0.25s  HTTP 401 authentication_error: invalid x-api-key",
        "1 of 2 providers failed",
    ]


def test_plain_table_without_rows_still_prints_the_summary() -> None:
    """No results still gives a header and a summary rather than a crash."""
    out = io.StringIO()
    render([], out, rich=False)
    assert out.getvalue().splitlines() == [
        "PROVIDER  TYPE  OUTCOME  TIME  DETAIL",
        "all 0 providers ok",
    ]


def test_rich_table_names_every_provider() -> None:
    """On a terminal a rich table shows the same rows, provider text taken literally."""
    out = io.StringIO()
    results = [
        *_results(),
        CheckResult(provider="p", type="openai", outcome="error", detail="[/] [bold]", elapsed=1),
    ]
    render(results, out, rich=True)
    text = out.getvalue()
    assert "claude" in text
    assert "auth_failed" in text
    assert "[/] [bold]" in text
    assert "2 of 3 providers failed" in text


def _write_config(tmp_path: Path, body: str) -> str:
    path = tmp_path / "runner.yaml"
    path.write_text(body)
    return str(path)


def test_cli_exit_0_when_all_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command exits 0 and prints the table when every provider is ok."""
    path = _write_config(
        tmp_path,
        "version: 1\n"
        "providers:\n"
        "  - {id: sim-a, type: simulated}\n"
        "  - {id: sim-b, type: simulated}\n"
        "default_provider: sim-a\n",
    )
    assert main(["providers", "check", "--config", path, "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "sim-a" in out
    assert "sim-b" in out
    assert out.splitlines()[-1] == "all 2 providers ok"


def test_cli_exit_1_on_failure_and_never_prints_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing provider makes the exit code 1; its key is printed nowhere."""
    key = "sk-cli-secret-0123456789abcdef"
    monkeypatch.setenv("CHECK_TEST_KEY", key)
    path = _write_config(
        tmp_path,
        "version: 1\n"
        "providers:\n"
        "  - {id: sim, type: simulated}\n"
        "  - id: down\n"
        "    type: openai\n"
        "    model: gpt-4.1-mini\n"
        "    api_key: ${CHECK_TEST_KEY}\n"
        f"    base_url: http://127.0.0.1:{_closed_port()}/v1\n"
        "default_provider: sim\n",
    )
    assert main(["providers", "check", "--config", path, "--timeout", "2"]) == 1
    captured = capsys.readouterr()
    assert "unreachable" in captured.out
    assert captured.out.splitlines()[-1] == "1 of 2 providers failed"
    assert key not in captured.out + captured.err


def test_cli_rejects_a_non_positive_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout 0 is a usage error (exit 2) with one clear message."""
    path = _write_config(
        tmp_path, "version: 1\nproviders:\n  - {id: s, type: simulated}\ndefault_provider: s\n"
    )
    assert main(["providers", "check", "--config", path, "--timeout", "0"]) == 2
    assert "--timeout must be a positive number of seconds" in capsys.readouterr().err
