"""The three wire formats the ``http`` case speaks: paths, request bodies, canned answers.

One place for what goes over the wire, shared by the local server
(:mod:`benchmarks.http_server`) and the clients of :mod:`benchmarks.http_sides`,
so every client sends the same request and gets the same answer:

* ``openai``: ``POST {base}/v1/chat/completions`` answered with a
  ``chat.completion`` object (choices, message, finish_reason, usage with its
  detail objects, service_tier, system_fingerprint) and ``x-request-id``;
* ``anthropic``: ``POST {base}/v1/messages`` answered with a ``message``
  (a text content block, ``stop_reason: end_turn``, usage with the cache
  counters) and ``request-id``;
* ``gemini``: ``POST {base}/v1beta/models/{model}:generateContent`` answered
  with candidates, ``finishReason: STOP``, ``usageMetadata``, ``modelVersion``
  and ``responseId``.

The bodies are what the real APIs return for a short answer, fields and
nesting included, so each client decodes as much JSON as it would in real use.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

Wire = Literal["openai", "anthropic", "gemini"]
WIRES: Final[tuple[Wire, ...]] = ("openai", "anthropic", "gemini")

#: The model every side asks for; the server answers any model.
MODEL: Final = "bench-model"
#: The answer text; every client checks it arrived.
ANSWER: Final = "def f():\n    return 42\n"
#: A key that is obviously not one; the server never checks it.
DUMMY_KEY: Final = "sk-bench-dummy-key-not-a-secret"
#: The ``anthropic-version`` header runner's adapter sends by default.
ANTHROPIC_VERSION: Final = "2023-06-01"

_OPENAI_BODY: Final = {
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1764190000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 14,
        "completion_tokens": 9,
        "total_tokens": 23,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_bench",
}

_ANTHROPIC_BODY: Final = {
    "id": "msg_bench000000000000000000",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": ANSWER}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 14,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    },
}

_GEMINI_BODY: Final = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": ANSWER}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 14,
        "candidatesTokenCount": 9,
        "totalTokenCount": 23,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 14}],
    },
    "modelVersion": MODEL,
    "responseId": "bench-response-0000",
}

#: Wire -> (the JSON body, the response headers that carry the request id).
CANNED: Final[dict[Wire, tuple[bytes, tuple[tuple[str, str], ...]]]] = {
    "openai": (
        msgspec.json.encode(_OPENAI_BODY),
        (("x-request-id", "req_bench"), ("openai-processing-ms", "1")),
    ),
    "anthropic": (
        msgspec.json.encode(_ANTHROPIC_BODY),
        (("request-id", "req_bench"), ("anthropic-organization-id", "org-bench")),
    ),
    "gemini": (msgspec.json.encode(_GEMINI_BODY), ()),
}


def base_url(wire: Wire, port: int) -> str:
    """The ``base_url`` a runner provider of this wire takes (openai's includes ``/v1``)."""
    root = f"http://127.0.0.1:{port}"
    return f"{root}/v1" if wire == "openai" else root


def endpoint(wire: Wire, port: int) -> str:
    """The full URL a completion request of this wire goes to."""
    root = f"http://127.0.0.1:{port}"
    if wire == "openai":
        return f"{root}/v1/chat/completions"
    if wire == "anthropic":
        return f"{root}/v1/messages"
    return f"{root}/v1beta/models/{MODEL}:generateContent"


def headers(wire: Wire) -> dict[str, str]:
    """The request headers runner's adapter for this wire sends (dummy key)."""
    common = {"Content-Type": "application/json", "Accept": "application/json"}
    if wire == "openai":
        return common | {"Authorization": f"Bearer {DUMMY_KEY}"}
    if wire == "anthropic":
        return common | {"x-api-key": DUMMY_KEY, "anthropic-version": ANTHROPIC_VERSION}
    return common | {"x-goog-api-key": DUMMY_KEY}


def prompt(i: int) -> str:
    """The ``i``-th request's prompt (the same on every side)."""
    return f"Write function number {i}."


def request_body(wire: Wire, i: int) -> dict[str, object]:
    """The JSON body of the ``i``-th request, as runner's adapter builds it with no parameters."""
    text = prompt(i)
    if wire == "openai":
        return {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if wire == "anthropic":
        # runner sends max_tokens 4096 when no layer sets one (the API requires it).
        return {"model": MODEL, "max_tokens": 4096, "messages": [{"role": "user", "content": text}]}
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def answer_text(wire: Wire, doc: Any) -> str | None:
    """The answer in a decoded response body, read as each API's clients read it."""
    try:
        if wire == "openai":
            content = doc["choices"][0]["message"]["content"]
            return content if isinstance(content, str) else None
        if wire == "anthropic":
            return "".join(b["text"] for b in doc["content"] if b["type"] == "text")
        parts = doc["candidates"][0]["content"]["parts"]
        return "".join(p["text"] for p in parts if not p.get("thought"))
    except (KeyError, IndexError, TypeError):
        return None


def route(method: bytes, target: bytes) -> Wire | None:
    """Which wire a request line is for, or ``None`` (answered 404)."""
    if method != b"POST":
        return None
    path = target.split(b"?", 1)[0]
    if path.endswith(b"/chat/completions"):
        return "openai"
    if path == b"/v1/messages":
        return "anthropic"
    if path.endswith(b":generateContent") and path.startswith((b"/v1beta/models/", b"/v1/models/")):
        return "gemini"
    return None
