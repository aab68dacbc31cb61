"""The Google Gemini adapter (AI Studio ``generateContent``).

``POST {base_url}/v1beta/models/{model}:generateContent`` with the key in the
``x-goog-api-key`` header (never in the URL, where it would reach logs).  The
system prompt goes in ``systemInstruction``, assistant turns are role
``model``, parameters live in ``generationConfig`` (camelCase), and thought
parts are not part of the answer.  A prompt blocked before generation (no
candidates, ``promptFeedback.blockReason``) is ``content_filtered``.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

import msgspec
from msgspec import Struct, field

from workers._base import CompletionRequest, CompletionResponse
from workers._errors import ErrorCode
from workers._http import HttpProvider, WireError, split_system
from workers._settings import ProviderConfig
from workers._types import FinishReason, Usage

API_VERSION: Final = "v1beta"

_FILTERED: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FINISH: Final[dict[str, FinishReason]] = {"STOP": "stop", "MAX_TOKENS": "length"}

_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_QUOTA_FAILURE: Final = "type.googleapis.com/google.rpc.QuotaFailure"
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"


class _Part(Struct, frozen=True):
    text: str | None = None
    thought: bool = False


class _Content(Struct, frozen=True):
    parts: list[_Part] = []


class _Candidate(Struct, frozen=True, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _PromptFeedback(Struct, frozen=True, rename="camel"):
    block_reason: str | None = None


class _Usage(Struct, frozen=True, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int | None = None


class _Response(Struct, frozen=True, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _Usage | None = None
    model_version: str | None = None
    response_id: str | None = None


class _ModelList(Struct, frozen=True):
    models: list[msgspec.Raw] = []


class _Violation(Struct, frozen=True, rename="camel"):
    quota_id: str | None = None


class _Detail(Struct, frozen=True, rename="camel"):
    type: str | None = field(default=None, name="@type")
    reason: str | None = None
    retry_delay: str | None = None
    violations: list[_Violation] = []


class _ErrorDetail(Struct, frozen=True):
    code: int | None = None
    message: str | None = None
    status: str | None = None
    details: list[_Detail] = []


class _ErrorBody(Struct, frozen=True):
    error: _ErrorDetail | None = None


_RESPONSE: Final = msgspec.json.Decoder(_Response)
_MODELS: Final = msgspec.json.Decoder(_ModelList)
_ERROR: Final = msgspec.json.Decoder(_ErrorBody)


class GoogleProvider(HttpProvider[_ErrorBody]):
    """``type: google``: Gemini through the Generative Language API."""

    provider_type = "google"
    default_base_url = "https://generativelanguage.googleapis.com"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, _ERROR)
        model = config.model.removeprefix("models/")
        self._generate_url = (
            f"{self._base_url}/{API_VERSION}/models/{quote(model, safe='')}:generateContent"
        )

    def _auth_headers(self) -> dict[str, str]:
        key = self._config.api_key
        return {"x-goog-api-key": key.reveal()} if key else {}

    def build_body(self, request: CompletionRequest) -> dict[str, object]:
        """The JSON body for one request (public so tests can pin the mapping)."""
        system, turns = split_system(request)
        body: dict[str, object] = {
            "contents": [
                {
                    "role": "model" if m.role == "assistant" else "user",
                    "parts": [{"text": m.content}],
                }
                for m in turns
            ]
        }
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        p = request.parameters
        config: dict[str, object] = {}
        if p.max_tokens is not None:
            config["maxOutputTokens"] = p.max_tokens
        if p.temperature is not None:
            config["temperature"] = p.temperature
        if p.top_p is not None:
            config["topP"] = p.top_p
        if p.stop:
            config["stopSequences"] = list(p.stop)
        if p.seed is not None:
            config["seed"] = p.seed
        if config:
            body["generationConfig"] = config
        return body

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        reply, _ = await self._post_json(self._generate_url, self.build_body(request), _RESPONSE)
        if not reply.candidates:
            blocked = reply.prompt_feedback.block_reason if reply.prompt_feedback else None
            if blocked:
                raise self._fail(
                    "content_filtered", f"the prompt was blocked ({blocked})", status=200
                )
            raise self._fail("invalid_response", "HTTP 200 with no candidates", status=200)
        candidate = reply.candidates[0]
        parts = candidate.content.parts if candidate.content else []
        texts = [p.text for p in parts if p.text is not None and not p.thought]
        native = candidate.finish_reason or ""
        finish: FinishReason = (
            "content_filter" if native in _FILTERED else _FINISH.get(native, "other")
        )
        usage = reply.usage_metadata or _Usage()
        # Thinking tokens are billed as output, so they count as output here.
        output = usage.candidates_token_count + usage.thoughts_token_count
        total = usage.total_token_count
        return self._respond(
            text="".join(texts) if texts else None,
            finish_reason=finish,
            usage=Usage(
                input_tokens=usage.prompt_token_count,
                output_tokens=output,
                total_tokens=usage.prompt_token_count + output if total is None else total,
            ),
            model=reply.model_version,
            response_id=reply.response_id,
        )

    async def check_credentials(self) -> None:
        """``GET /v1beta/models?pageSize=1``: lists models without generating text."""
        await self._get_json(
            f"{self._base_url}/{API_VERSION}/models", _MODELS, params={"pageSize": "1"}
        )

    def _classify(self, status: int, body: _ErrorBody) -> WireError:
        error = body.error
        if error is None:
            return WireError()
        message = error.message or ""
        reasons = {d.reason for d in error.details if d.type == _ERROR_INFO and d.reason}
        quota_ids = [
            v.quota_id or ""
            for d in error.details
            if d.type == _QUOTA_FAILURE
            for v in d.violations
        ]
        delay = next(
            (d.retry_delay for d in error.details if d.type == _RETRY_INFO and d.retry_delay),
            None,
        )
        code: ErrorCode | None = None
        if "API_KEY_INVALID" in reasons:
            code = "auth_failed"
        elif error.status == "PERMISSION_DENIED" and "unregistered callers" in message:
            # A 403 that means "no key was sent" rather than "this key may not".
            code = "auth_failed"
        elif status == 429 and any("PerDay" in q for q in quota_ids):
            # A daily quota will not come back within any retry budget.
            code = "quota_exhausted"
        elif error.status == "DEADLINE_EXCEEDED":
            code = "timeout"
        elif status == 400 and _is_context_length(message):
            code = "context_length_exceeded"
        kind = error.status
        if reasons:
            kind = f"{kind}/{','.join(sorted(reasons))}"
        return WireError(message=error.message, kind=kind, code=code, retry_delay=delay)


def _is_context_length(message: str) -> bool:
    # "The input token count (1200000) exceeds the maximum number of tokens
    # allowed (1048576)."
    lowered = message.lower()
    return "input token count" in lowered and "exceeds the maximum" in lowered
