"""Wire-faithful fake provider servers for tests and benchmarks.

Each fake is a real ``aiohttp.web`` server on 127.0.0.1 (an ephemeral port)
that speaks one provider's wire format as docs/providers.md describes it::

    async with FakeOpenAI() as fake:                 # FakeAnthropic, FakeGoogle
        provider = OpenAIProvider(fake.provider_config())
        fake.script(
            FakeOpenAI.error(429, "Rate limit reached", code="rate_limit_exceeded",
                             headers={"retry-after": "2"}),
            Reply.html(502),                          # a proxy's HTML page
            Reply.malformed(),                        # JSON cut short
            Reply.truncated(),                        # connection drops mid-body
            Reply.dropped(),                          # connection closes, no answer
            Reply.stalled(30),                        # no answer (until shutdown)
            Reply(delay=0.2),                         # a normal answer, late
            fake.completion("Hi", finish_reason="length"),
        )
        ...
        fake.requests[-1].json                        # what the adapter sent

What the fakes promise:

- **Validation first, like the real API.**  The key (OpenAI ``Authorization:
  Bearer``; Anthropic ``x-api-key`` or ``Authorization: Bearer``; Gemini
  ``x-goog-api-key`` or ``?key=``), Anthropic's ``anthropic-version`` and
  ``max_tokens``, roles, known models and Gemini's ``generationConfig`` field
  names are checked, and a wrong request gets that provider's real error
  shape (a bad Gemini key is 400 ``API_KEY_INVALID``).  Scripted replies only
  answer valid requests.
- **Then the script**, one reply per request (both the generate and models
  endpoints), in order.
- **Then the default**: ``text`` (``"Hello! This is a fake reply."``) cut at
  the first stop sequence or at ``max_tokens`` words (finish ``length``),
  with word-count usage, ids and the provider's id headers.
- Every request is recorded in ``fake.requests`` (method, path, query,
  headers, body, ``.json``).
- ``api_key=None`` accepts requests without a key (a local OpenAI-compatible
  server).  ``provider_config(**overrides)`` gives a ``ProviderConfig``
  pointing at the fake with the accepted key and the SDK's ``base_url``
  convention.
- Stalls end when the server stops, so teardown never waits for them.
"""

from __future__ import annotations

from tests.fakes._server import FakeServer, Received, Reply
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.google import FakeGoogle, error_info, quota_failure, retry_info
from tests.fakes.openai import FakeOpenAI

FAKES: dict[str, type[FakeServer]] = {
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "google": FakeGoogle,
}

__all__ = [
    "FAKES",
    "FakeAnthropic",
    "FakeGoogle",
    "FakeOpenAI",
    "FakeServer",
    "Received",
    "Reply",
    "error_info",
    "quota_failure",
    "retry_info",
]
