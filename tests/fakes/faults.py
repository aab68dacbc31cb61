"""Every provider fault the fakes can produce, with the error it must become.

``MATRIX[kind][provider]`` is a :class:`Cell`: how to provoke the fault (a
scripted reply, config overrides, or a closed port) and the expected code,
``retryable`` and ``retry_after``.  ``None`` marks a kind the provider does
not have.  The fault-matrix and secrets tests drive every cell; dispatcher
tests can use the same cells to check retry decisions end to end.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes._server import FakeServer, Reply
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.google import FakeGoogle, error_info, quota_failure, retry_info
from tests.fakes.openai import FakeOpenAI
from workers import Secret

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

    def base_url(self, provider_type: str) -> str | None:
        """The base_url override for a refused connection, else ``None``."""
        if not self.refused:
            return None
        root = f"http://127.0.0.1:{closed_port()}"
        return root + "/v1" if provider_type == "openai" else root


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
}


def _args(fake: FakeServer) -> tuple[str, ...]:
    """Arguments for ``error(status, ...)`` that give a plain error of each shape."""
    if isinstance(fake, FakeAnthropic):
        return ("invalid_request_error", "Something is wrong with the request")
    return ("Something is wrong with the request",)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
