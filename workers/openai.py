"""The OpenAI Chat Completions adapter, also for OpenAI-compatible servers.

Any server that speaks ``POST {base_url}/chat/completions`` works: Ollama
(``http://localhost:11434/v1``), vLLM (``http://localhost:8000/v1``) and the
llama.cpp server (``http://localhost:8080/v1``).  Without an ``api_key`` no
``Authorization`` header is sent, as local servers need none.  The output cap
is ``max_completion_tokens`` on api.openai.com and ``max_tokens`` elsewhere.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct

from workers._base import CompletionRequest, CompletionResponse
from workers._errors import ErrorCode
from workers._http import HttpProvider, WireError, split_system
from workers._settings import ProviderConfig
from workers._types import FinishReason, Usage

#: The host whose API takes ``max_completion_tokens``; other servers get ``max_tokens``.
OPENAI_HOST: Final = "api.openai.com"

_FINISH: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}

# "Please try again in 1.574s." / "in 250ms." in rate-limit messages: the only
# delay hint OpenAI is known to give reliably (docs/providers.md, Errors).
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?(?:ms|s))\b")


class _Message(Struct, frozen=True):
    content: str | None = None
    refusal: str | None = None


class _Choice(Struct, frozen=True):
    message: _Message
    finish_reason: str | None = None


class _Usage(Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None


class _Completion(Struct, frozen=True):
    choices: list[_Choice]
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class _ModelList(Struct, frozen=True):
    data: list[msgspec.Raw]


class _ErrorDetail(Struct, frozen=True):
    message: str | None = None
    type: str | None = None
    # OpenAI sends strings; llama.cpp and vLLM send the HTTP status as an int.
    code: str | int | None = None


class _ErrorBody(Struct, frozen=True):
    # Ollama has sent {"error": "text"}; vLLM once answered with a top-level message.
    error: _ErrorDetail | str | None = None
    message: str | None = None


_COMPLETION: Final = msgspec.json.Decoder(_Completion)
_MODELS: Final = msgspec.json.Decoder(_ModelList)
_ERROR: Final = msgspec.json.Decoder(_ErrorBody)


class OpenAIProvider(HttpProvider[_ErrorBody]):
    """``type: openai``: Chat Completions on api.openai.com or a compatible server."""

    provider_type = "openai"
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, _ERROR)
        # OpenAI deprecated max_tokens and its reasoning models refuse it;
        # Ollama, llama.cpp and most compatible servers only know max_tokens.
        self._max_tokens_field = (
            "max_completion_tokens"
            if urlsplit(self._base_url).hostname == OPENAI_HOST
            else "max_tokens"
        )

    def _auth_headers(self) -> dict[str, str]:
        key = self._config.api_key
        return {"Authorization": f"Bearer {key.reveal()}"} if key else {}

    def build_body(self, request: CompletionRequest) -> dict[str, object]:
        """The JSON body for one request (public so tests can pin the mapping)."""
        system, turns = split_system(request)
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.extend({"role": m.role, "content": m.content} for m in turns)
        body: dict[str, object] = {"model": self._config.model, "messages": messages}
        p = request.parameters
        if p.max_tokens is not None:
            body[self._max_tokens_field] = p.max_tokens
        if p.temperature is not None:
            body["temperature"] = p.temperature
        if p.top_p is not None:
            body["top_p"] = p.top_p
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        reply, headers = await self._post_json(
            f"{self._base_url}/chat/completions", self.build_body(request), _COMPLETION
        )
        if not reply.choices:
            raise self._fail("invalid_response", "HTTP 200 with no choices", status=200)
        choice = reply.choices[0]
        finish = _FINISH.get(choice.finish_reason or "", "other")
        text = choice.message.content
        if text is None and choice.message.refusal is not None:
            text, finish = choice.message.refusal, "content_filter"
        usage = reply.usage or _Usage()
        total = usage.total_tokens
        return self._respond(
            text=text,
            finish_reason=finish,
            usage=Usage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                total_tokens=usage.prompt_tokens + usage.completion_tokens
                if total is None
                else total,
            ),
            model=reply.model,
            response_id=reply.id or headers.get("x-request-id"),
        )

    async def check_credentials(self) -> None:
        """``GET /models``: lists models without generating text."""
        await self._get_json(f"{self._base_url}/models", _MODELS)

    def _classify(self, status: int, body: _ErrorBody) -> WireError:
        if isinstance(body.error, str):
            return WireError(message=body.error)
        if body.error is None:
            return WireError(message=body.message)
        detail = body.error
        code = detail.code if isinstance(detail.code, str) else None
        names = {code, detail.type}
        refined: ErrorCode | None = None
        if "insufficient_quota" in names:
            refined = "quota_exhausted"
        elif "context_length_exceeded" in names:
            refined = "context_length_exceeded"
        elif "invalid_api_key" in names:
            refined = "auth_failed"
        hint = _TRY_AGAIN.search(detail.message or "")
        return WireError(
            message=detail.message,
            kind=code or detail.type,
            code=refined,
            retry_delay=hint.group(1) if hint else None,
        )
