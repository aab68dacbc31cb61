"""One contract, four adapters: simulated, OpenAI, Anthropic and Gemini.

The HTTP adapters run against the wire-faithful fakes in ``tests.fakes``;
the same cases run against each adapter through a small harness that reads
back, in provider-neutral form, what the adapter sent.  Provider-specific
wire details (header names, field names, finish-reason tables) follow.
aiohttp is asyncio-only, so this module runs on asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from runner import Message, Usage
from runner.config import ProviderConfig
from tests.fakes import FakeAnthropic, FakeGoogle, FakeOpenAI, FakeServer, Reply
from workers._base import CompletionRequest, CompletionResponse, Provider
from workers._factory import open_provider
from workers._parameters import Parameters
from workers.openai import OpenAIProvider
from workers.simulated import SimulatedProvider

pytestmark = pytest.mark.anyio

PROVIDERS = ["simulated", "openai", "anthropic", "google"]


@dataclass(frozen=True)
class Sent:
    """What an adapter sent, in provider-neutral form."""

    system: str | None
    turns: list[tuple[str, str]]
    max_tokens: int | None
    stop: list[str] | None
    temperature: float | None
    top_p: float | None
    seed: int | None


@dataclass
class Harness:
    name: str
    provider: Provider
    sent: Callable[[], Sent]
    expected_text: Callable[[CompletionRequest], str]
    supports_seed: bool = True


def _sent_openai(body: dict[str, Any]) -> Sent:
    messages = body["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    turns = [(m["role"], m["content"]) for m in messages if m["role"] != "system"]
    return Sent(
        system,
        turns,
        body.get("max_completion_tokens", body.get("max_tokens")),
        body.get("stop"),
        body.get("temperature"),
        body.get("top_p"),
        body.get("seed"),
    )


def _sent_anthropic(body: dict[str, Any]) -> Sent:
    turns = [(m["role"], m["content"]) for m in body["messages"]]
    return Sent(
        body.get("system"),
        turns,
        body["max_tokens"],
        body.get("stop_sequences"),
        body.get("temperature"),
        body.get("top_p"),
        None,
    )


def _sent_google(body: dict[str, Any]) -> Sent:
    system = body.get("systemInstruction", {}).get("parts", [{}])[0].get("text")
    turns = [
        ("assistant" if c["role"] == "model" else c["role"], c["parts"][0]["text"])
        for c in body["contents"]
    ]
    config = body.get("generationConfig", {})
    return Sent(
        system,
        turns,
        config.get("maxOutputTokens"),
        config.get("stopSequences"),
        config.get("temperature"),
        config.get("topP"),
        config.get("seed"),
    )


_SENT = {"openai": _sent_openai, "anthropic": _sent_anthropic, "google": _sent_google}
_FAKES: dict[str, type[FakeServer]] = {
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "google": FakeGoogle,
}


@pytest.fixture(params=PROVIDERS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    name: str = request.param
    if name == "simulated":
        seen: list[CompletionRequest] = []

        def record(req: CompletionRequest) -> None:
            seen.append(req)

        config = ProviderConfig(id="sim", type="simulated", model="sim-model")
        simulated: Provider = SimulatedProvider(config, script=record)

        def sent_sim() -> Sent:
            r = seen[-1]
            p = r.parameters
            return Sent(
                r.system,
                [(m.role, m.content) for m in r.messages],
                p.max_tokens,
                list(p.stop) if p.stop else None,
                p.temperature,
                p.top_p,
                p.seed,
            )

        yield Harness(
            name,
            simulated,
            sent_sim,
            lambda r: f"[simulated sim-model] reply to: {r.messages[-1].content[:120]}",
        )
        await simulated.aclose()
        return
    async with _FAKES[name]() as fake:
        provider = open_provider(fake.provider_config())
        yield Harness(
            name,
            provider,
            lambda: _SENT[name](fake.last().json),
            lambda _r: fake.text,
            supports_seed=name != "anthropic",
        )
        await provider.aclose()


def _request(
    prompt: str = "Say hello", *, system: str | None = None, **params: Any
) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content=prompt),),
        system=system,
        parameters=Parameters(**params),
        task_id="t-1",
    )


# The contract.


async def test_complete_returns_the_text(harness: Harness) -> None:
    """A plain request comes back as the provider's text with finish reason stop."""
    request = _request()
    response = await harness.provider.complete(request)
    assert isinstance(response, CompletionResponse)
    assert response.text == harness.expected_text(request)
    assert response.finish_reason == "stop"


async def test_usage_is_counted(harness: Harness) -> None:
    """Usage has input and output tokens, and the total is their sum."""
    response = await harness.provider.complete(_request("one two three"))
    usage = response.usage
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_response_id_and_model(harness: Harness) -> None:
    """Every response carries the provider's response id and the model that answered."""
    response = await harness.provider.complete(_request())
    assert response.response_id
    assert response.model == harness.provider.model


async def test_system_prompt_is_sent_as_the_system_prompt(harness: Harness) -> None:
    """The system prompt reaches the provider's system slot, not a user turn."""
    await harness.provider.complete(_request(system="Be terse."))
    sent = harness.sent()
    assert sent.system == "Be terse."
    assert sent.turns == [("user", "Say hello")]


async def test_no_system_prompt_sends_none(harness: Harness) -> None:
    """Without a system prompt nothing is sent in its place."""
    await harness.provider.complete(_request())
    assert harness.sent().system is None


async def test_multi_turn_messages_keep_order_and_roles(harness: Harness) -> None:
    """User and assistant turns reach the provider in order with their roles."""
    request = CompletionRequest(
        messages=(
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello, how can I help?"),
            Message(role="user", content="Tell me a joke"),
        ),
    )
    response = await harness.provider.complete(request)
    assert harness.sent().turns == [
        ("user", "Hi"),
        ("assistant", "Hello, how can I help?"),
        ("user", "Tell me a joke"),
    ]
    assert response.text == harness.expected_text(request)


async def test_max_tokens_caps_the_output(harness: Harness) -> None:
    """max_tokens is sent, and an answer cut by it finishes with length."""
    response = await harness.provider.complete(_request(max_tokens=2))
    assert harness.sent().max_tokens == 2
    assert response.finish_reason == "length"
    assert response.usage.output_tokens <= 2


async def test_stop_sequences_are_sent(harness: Harness) -> None:
    """Stop sequences reach the provider under its own name."""
    await harness.provider.complete(_request(stop=("fake", "\n\n")))
    assert harness.sent().stop == ["fake", "\n\n"]


async def test_sampling_parameters_are_sent(harness: Harness) -> None:
    """temperature, top_p and (where supported) seed reach the provider."""
    await harness.provider.complete(_request(temperature=0.3, top_p=0.9, seed=7))
    sent = harness.sent()
    assert (sent.temperature, sent.top_p) == (0.3, 0.9)
    assert sent.seed == (7 if harness.supports_seed else None)


async def test_check_credentials_passes_with_a_good_key(harness: Harness) -> None:
    """A good key passes the credential check, which generates no text."""
    await harness.provider.check_credentials()


async def test_aclose_twice_is_harmless(harness: Harness) -> None:
    """Closing a provider twice does nothing the second time."""
    await harness.provider.complete(_request())
    await harness.provider.aclose()
    await harness.provider.aclose()


async def test_adapter_satisfies_the_protocol(harness: Harness) -> None:
    """Each adapter is a Provider with its configured id, type and model."""
    assert isinstance(harness.provider, Provider)
    assert harness.provider.type == harness.name


# Wire details, provider by provider.


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        (None, "max_completion_tokens"),
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("http://localhost:11434/v1", "max_tokens"),
        ("http://vllm.internal:8000/v1", "max_tokens"),
    ],
)
async def test_openai_output_cap_name_follows_the_server(base_url: str | None, field: str) -> None:
    """api.openai.com gets max_completion_tokens; compatible servers get max_tokens."""
    config = ProviderConfig(id="o", type="openai", model="m", base_url=base_url)
    body = OpenAIProvider(config).build_body(_request(max_tokens=5))
    assert body[field] == 5
    assert ({"max_tokens", "max_completion_tokens"} - {field}).isdisjoint(body)


async def test_openai_body_and_headers() -> None:
    """OpenAI gets a system message first, the output cap and a Bearer key."""
    async with FakeOpenAI() as fake:
        provider = open_provider(fake.provider_config())
        try:
            await provider.complete(_request(system="S", max_tokens=5, stop=("x",), seed=1))
        finally:
            await provider.aclose()
        sent = fake.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert sent.json == {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Say hello"}],
        "max_tokens": 5,
        "stop": ["x"],
        "seed": 1,
    }


async def test_openai_without_key_sends_no_authorization() -> None:
    """A local OpenAI-compatible server needs no key, and none is sent."""
    async with FakeOpenAI(api_key=None, models=["llama3.2"]) as fake:
        provider = open_provider(fake.provider_config())
        try:
            response = await provider.complete(_request())
            await provider.check_credentials()
        finally:
            await provider.aclose()
    assert response.text == fake.text
    assert all("Authorization" not in r.headers for r in fake.requests)


async def test_config_headers_are_sent() -> None:
    """Headers from the config reach the provider on every request."""
    async with FakeOpenAI() as fake:
        config = fake.provider_config(headers={"OpenAI-Organization": "org-123"})
        provider = open_provider(config)
        try:
            await provider.complete(_request())
        finally:
            await provider.aclose()
    assert fake.last().headers["OpenAI-Organization"] == "org-123"


async def test_anthropic_headers_and_default_max_tokens() -> None:
    """Anthropic gets x-api-key, anthropic-version and max_tokens 4096 when unset."""
    async with FakeAnthropic() as fake:
        provider = open_provider(fake.provider_config())
        try:
            await provider.complete(_request(system="S", temperature=0.5))
        finally:
            await provider.aclose()
        sent = fake.last()
    assert sent.headers["x-api-key"] == fake.api_key
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Say hello"}],
        "system": "S",
        "temperature": 0.5,
    }


async def test_anthropic_new_api_version_drops_sampling_parameters() -> None:
    """Under 2026-10-21 temperature and top_p are not sent (the API rejects them)."""
    async with FakeAnthropic() as fake:
        provider = open_provider(fake.provider_config(api_version="2026-10-21"))
        try:
            response = await provider.complete(_request(temperature=0.5, top_p=0.9))
        finally:
            await provider.aclose()
        sent = fake.last()
    assert response.text == fake.text
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert "temperature" not in sent.json
    assert "top_p" not in sent.json


async def test_google_path_header_and_camel_case() -> None:
    """Gemini gets the key in x-goog-api-key, role model and a camelCase generationConfig."""
    async with FakeGoogle() as fake:
        provider = open_provider(fake.provider_config())
        request = CompletionRequest(
            system="S",
            messages=(
                Message(role="user", content="a"),
                Message(role="assistant", content="b"),
                Message(role="user", content="c"),
            ),
            parameters=Parameters(max_tokens=9, top_p=0.5, stop=("z",), seed=3),
        )
        try:
            await provider.complete(request)
        finally:
            await provider.aclose()
        sent = fake.last()
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == fake.api_key
    assert "key" not in sent.query
    assert sent.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
            {"role": "user", "parts": [{"text": "c"}]},
        ],
        "systemInstruction": {"parts": [{"text": "S"}]},
        "generationConfig": {"maxOutputTokens": 9, "topP": 0.5, "stopSequences": ["z"], "seed": 3},
    }


async def test_system_messages_are_folded_into_the_system_prompt() -> None:
    """A system message left among the messages joins the system prompt."""
    async with FakeAnthropic() as fake:
        provider = open_provider(fake.provider_config())
        request = CompletionRequest(
            system="A",
            messages=(Message(role="system", content="B"), Message(role="user", content="hi")),
        )
        try:
            await provider.complete(request)
        finally:
            await provider.aclose()
    assert fake.last().json["system"] == "A\n\nB"
    assert fake.last().json["messages"] == [{"role": "user", "content": "hi"}]


FINISH_CASES = [
    ("openai", "stop", "stop"),
    ("openai", "length", "length"),
    ("openai", "content_filter", "content_filter"),
    ("openai", "tool_calls", "tool_calls"),
    ("openai", "function_call", "tool_calls"),
    ("openai", "something_new", "other"),
    ("anthropic", "end_turn", "stop"),
    ("anthropic", "stop_sequence", "stop"),
    ("anthropic", "max_tokens", "length"),
    ("anthropic", "model_context_window_exceeded", "length"),
    ("anthropic", "tool_use", "tool_calls"),
    ("anthropic", "refusal", "content_filter"),
    ("anthropic", "pause_turn", "other"),
    ("google", "STOP", "stop"),
    ("google", "MAX_TOKENS", "length"),
    ("google", "SAFETY", "content_filter"),
    ("google", "RECITATION", "content_filter"),
    ("google", "PROHIBITED_CONTENT", "content_filter"),
    ("google", "MALFORMED_FUNCTION_CALL", "other"),
    ("google", "OTHER", "other"),
]


def _success(fake: FakeServer, text: str | None, native: str) -> Reply:
    if isinstance(fake, FakeOpenAI):
        return fake.completion(text, finish_reason=native)
    if isinstance(fake, FakeAnthropic):
        return fake.completion(text, stop_reason=native)
    assert isinstance(fake, FakeGoogle)
    return fake.completion(text, finish_reason=native)


@pytest.mark.parametrize(("kind", "native", "expected"), FINISH_CASES)
async def test_finish_reasons_are_normalised(kind: str, native: str, expected: str) -> None:
    """Each provider's finish reasons map onto stop, length, content_filter, tool_calls, other."""
    async with _FAKES[kind]() as fake:
        provider = open_provider(fake.provider_config())
        fake.script(_success(fake, "ok", native))
        try:
            response = await provider.complete(_request())
        finally:
            await provider.aclose()
    assert response.finish_reason == expected
    assert response.text == "ok"


async def test_openai_usage_ids_and_refusal() -> None:
    """OpenAI usage and ids come through; a refusal is content_filter with its text."""
    async with FakeOpenAI() as fake:
        provider = open_provider(fake.provider_config())
        fake.script(
            fake.completion("Hello!", prompt_tokens=12, completion_tokens=3),
            fake.completion(None, refusal="I can't help with that."),
        )
        try:
            first = await provider.complete(_request())
            second = await provider.complete(_request())
        finally:
            await provider.aclose()
    assert first.usage == Usage(input_tokens=12, output_tokens=3, total_tokens=15)
    assert first.response_id == "chatcmpl-1"
    assert first.model == "gpt-4.1-mini-2025-04-14"
    assert (second.text, second.finish_reason) == ("I can't help with that.", "content_filter")


async def test_anthropic_joins_text_blocks_and_skips_thinking() -> None:
    """Anthropic text blocks are joined, thinking blocks skipped, cache tokens counted."""
    async with FakeAnthropic() as fake:
        provider = open_provider(fake.provider_config())
        reply = fake.completion("Hello", thinking="let me think", input_tokens=5, output_tokens=2)
        reply.json["content"].append({"type": "text", "text": " world"})
        reply.json["usage"]["cache_read_input_tokens"] = 10
        fake.script(reply)
        try:
            response = await provider.complete(_request())
        finally:
            await provider.aclose()
    assert response.text == "Hello world"
    assert response.usage == Usage(input_tokens=15, output_tokens=2, total_tokens=17)
    assert response.response_id == "msg_000000000000000000000001"


async def test_google_skips_thought_parts_and_counts_thinking_as_output() -> None:
    """Gemini thought parts are not text; thinking tokens count as output; total is the API's."""
    async with FakeGoogle() as fake:
        provider = open_provider(fake.provider_config())
        fake.script(
            fake.completion(
                "Answer",
                thoughts="hmm",
                prompt_tokens=120,
                candidates_tokens=50,
                thoughts_tokens=30,
            )
        )
        try:
            response = await provider.complete(_request())
        finally:
            await provider.aclose()
    assert response.text == "Answer"
    assert response.usage == Usage(input_tokens=120, output_tokens=80, total_tokens=200)
    assert response.response_id == "resp-1"
