"""A fake Gemini generateContent server (docs/providers.md, `google`).

Serves ``POST /{v1beta,v1}/models/{model}:generateContent`` and
``GET /{v1beta,v1}/models``.  Takes the key from ``x-goog-api-key`` or
``?key=``; a wrong key is the real **400** ``INVALID_ARGUMENT`` with ErrorInfo
reason ``API_KEY_INVALID``, no key at all is 403 ``PERMISSION_DENIED``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes._server import Endpoint, FakeServer, Received, Reply, cut, json_object, words

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GENERATION_FIELDS = {
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "candidateCount",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "thinkingConfig",
}


def error_info(reason: str) -> dict[str, Any]:
    """A ``google.rpc.ErrorInfo`` detail."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def retry_info(delay: str) -> dict[str, Any]:
    """A ``google.rpc.RetryInfo`` detail such as ``retry_info("26s")``."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict[str, Any]:
    """A ``google.rpc.QuotaFailure`` detail naming one violated quota."""
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": (
                    "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                ),
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
            }
        ],
    }


class FakeGoogle(FakeServer):
    """Gemini on the wire, including the Google API error envelope."""

    provider_type = "google"
    default_model = "gemini-2.5-flash"

    def routes(self) -> list[web.RouteDef]:
        async def generate(request: web.Request) -> web.StreamResponse:
            model, _, method = request.match_info["tail"].rpartition(":")
            if method != "generateContent" or not model:
                return web.json_response(self._error_json(404, "Not found."), status=404)
            return await self.handle(request, "generate", model)

        async def models(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "models")

        return [
            web.post("/{version:v1beta|v1}/models/{tail}", generate),
            web.get("/{version:v1beta|v1}/models", models),
        ]

    @staticmethod
    def _error_json(code: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": code,
            "message": message,
            "status": _STATUS.get(code, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return {"error": error}

    @classmethod
    def error(
        cls,
        code: int,
        message: str,
        *,
        details: list[Any] | None = None,
        status: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An error in the Google API envelope (``status`` defaults from ``code``)."""
        body = cls._error_json(code, message, details)
        if status is not None:
            body["error"]["status"] = status
        return Reply(status=code, json=body, headers=headers or {})

    def completion(
        self,
        text: str | None,
        *,
        finish_reason: str | None = "STOP",
        prompt_tokens: int = 8,
        candidates_tokens: int = 3,
        thoughts: str | None = None,
        thoughts_tokens: int = 0,
        model: str | None = None,
    ) -> Reply:
        """A successful response; ``thoughts`` adds a thought part before the text."""
        n = self.next_id()
        parts: list[dict[str, Any]] = []
        if thoughts is not None:
            parts.append({"text": thoughts, "thought": True})
        if text is not None:
            parts.append({"text": text})
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish_reason is not None:
            candidate["finishReason"] = finish_reason
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
        }
        if thoughts_tokens:
            usage["thoughtsTokenCount"] = thoughts_tokens
        return Reply(
            json={
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model or self.models[0],
                "responseId": f"resp-{n}",
            }
        )

    def blocked(self, reason: str = "SAFETY") -> Reply:
        """A prompt blocked before generation: HTTP 200, no candidates."""
        return Reply(
            json={
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
                "modelVersion": self.models[0],
                "responseId": f"resp-{self.next_id()}",
            }
        )

    def validate(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply | None:
        given = request.headers.get("x-goog-api-key") or request.query.get("key")
        if self.api_key is not None:
            if not given:
                return self.error(
                    403,
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to "
                    "call this API.",
                )
            if given != self.api_key:
                return self.error(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    details=[error_info("API_KEY_INVALID")],
                )
        if endpoint == "models":
            return None
        if model not in self.models:
            return self.error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported "
                "for generateContent.",
            )
        body = json_object(request)
        if body is None:
            return self.error(400, "Invalid JSON payload received.")
        contents = body.get("contents")
        if not contents:
            return self.error(400, "* GenerateContentRequest.contents: contents is not specified")
        for content in contents:
            if content.get("role", "user") not in ("user", "model"):
                return self.error(400, "Please use a valid role: user, model.")
        for name in body.get("generationConfig", {}):
            if name not in _GENERATION_FIELDS:
                return self.error(
                    400,
                    f'Invalid JSON payload received. Unknown name "{name}" at '
                    "'generation_config': Cannot find field.",
                )
        return None

    def answer(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply:
        if endpoint == "models":
            return Reply(
                json={
                    "models": [
                        {
                            "name": f"models/{m}",
                            "version": "001",
                            "displayName": m,
                            "inputTokenLimit": 1048576,
                            "outputTokenLimit": 65536,
                            "supportedGenerationMethods": ["generateContent", "countTokens"],
                        }
                        for m in self.models
                    ]
                }
            )
        body = request.json
        config = body.get("generationConfig", {})
        text, _, capped = cut(
            self.text, config.get("maxOutputTokens"), config.get("stopSequences", [])
        )
        system = body.get("systemInstruction", {}).get("parts", [])
        prompt = sum(words(p.get("text", "")) for p in system) + sum(
            words(p.get("text", "")) for c in body["contents"] for p in c.get("parts", [])
        )
        return self.completion(
            text,
            finish_reason="MAX_TOKENS" if capped else "STOP",
            prompt_tokens=prompt,
            candidates_tokens=words(text),
            model=model,
        )
