"""The Anthropic Messages adapter (``POST {base_url}/v1/messages``).

The system prompt goes in the top-level ``system`` field, ``max_tokens`` is
always sent (the API requires it; 4096 when no layer sets it), and under API
version ``2026-10-21`` or later the removed sampling parameters
(``temperature``, ``top_p``) are left out.  Anthropic has no ``seed``.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import Struct

from workers._base import CompletionRequest, CompletionResponse
from workers._errors import ErrorCode
from workers._http import HttpProvider, WireError, split_system
from workers._settings import ProviderConfig
from workers._types import FinishReason, Usage

#: ``max_tokens`` when neither defaults, provider, role nor task set one.
DEFAULT_MAX_TOKENS: Final = 4096
#: From this API version on, temperature/top_p/top_k are rejected.
SAMPLING_REMOVED_IN: Final = "2026-10-21"

_FINISH: Final[dict[str, FinishReason]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# error.type values that say more than the status does.
_ERROR_TYPES: Final[dict[str, ErrorCode]] = {
    "authentication_error": "auth_failed",
    "permission_error": "permission_denied",
    "billing_error": "quota_exhausted",
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limited",
    # A 504 the API itself reports as a timeout: counted as a timeout, not a
    # server error, so metrics show where the time went (both are retried).
    "timeout_error": "timeout",
}


class _Block(Struct, frozen=True):
    type: str
    text: str | None = None


class _Usage(Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(Struct, frozen=True):
    content: list[_Block]
    id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ModelList(Struct, frozen=True):
    data: list[msgspec.Raw]


class _ErrorDetails(Struct, frozen=True):
    error_code: str | None = None


class _ErrorDetail(Struct, frozen=True):
    type: str | None = None
    message: str | None = None
    details: _ErrorDetails | None = None


class _ErrorBody(Struct, frozen=True):
    error: _ErrorDetail | None = None


_MESSAGE: Final = msgspec.json.Decoder(_Message)
_MODELS: Final = msgspec.json.Decoder(_ModelList)
_ERROR: Final = msgspec.json.Decoder(_ErrorBody)


class AnthropicProvider(HttpProvider[_ErrorBody]):
    """``type: anthropic``: the Messages API."""

    provider_type = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, _ERROR)

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._config.api_version}
        if self._config.api_key:
            headers["x-api-key"] = self._config.api_key.reveal()
        return headers

    def build_body(self, request: CompletionRequest) -> dict[str, object]:
        """The JSON body for one request (public so tests can pin the mapping)."""
        system, turns = split_system(request)
        p = request.parameters
        body: dict[str, object] = {
            "model": self._config.model,
            "max_tokens": DEFAULT_MAX_TOKENS if p.max_tokens is None else p.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in turns],
        }
        if system is not None:
            body["system"] = system
        if p.stop:
            body["stop_sequences"] = list(p.stop)
        # ISO dates compare correctly as strings.
        if self._config.api_version < SAMPLING_REMOVED_IN:
            if p.temperature is not None:
                body["temperature"] = p.temperature
            if p.top_p is not None:
                body["top_p"] = p.top_p
        return body

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        reply, headers = await self._post_json(
            f"{self._base_url}/v1/messages", self.build_body(request), _MESSAGE
        )
        texts = [b.text for b in reply.content if b.type == "text" and b.text is not None]
        usage = reply.usage or _Usage()
        # Cache reads and writes are input the model processed; counting them
        # keeps input_tokens comparable with OpenAI's prompt_tokens.
        input_tokens = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return self._respond(
            text="".join(texts) if texts else None,
            finish_reason=_FINISH.get(reply.stop_reason or "", "other"),
            usage=Usage(
                input_tokens=input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=input_tokens + usage.output_tokens,
            ),
            model=reply.model,
            response_id=reply.id or headers.get("request-id"),
        )

    async def check_credentials(self) -> None:
        """``GET /v1/models?limit=1``: lists models without generating text."""
        await self._get_json(f"{self._base_url}/v1/models", _MODELS, params={"limit": "1"})

    def _classify(self, status: int, body: _ErrorBody) -> WireError:
        detail = body.error
        if detail is None:
            return WireError()
        code: ErrorCode | None = _ERROR_TYPES.get(detail.type or "")
        message = detail.message or ""
        if detail.details is not None and detail.details.error_code == (
            "enforced_spend_limit_reached"
        ):
            code = "quota_exhausted"
        elif status == 400 and "prompt is too long" in message.lower():
            code = "context_length_exceeded"
        kind = detail.type
        if detail.details is not None and detail.details.error_code:
            kind = f"{kind}/{detail.details.error_code}"
        return WireError(message=detail.message, kind=kind, code=code)
