"""A fake OpenAI Chat Completions server (docs/providers.md, `openai`).

Serves ``POST /v1/chat/completions`` and ``GET /v1/models``; wants
``Authorization: Bearer <key>`` unless built with ``api_key=None`` (then it
behaves like Ollama or vLLM with no key).
"""

from __future__ import annotations

from aiohttp import web

from tests.fakes._server import Endpoint, FakeServer, Received, Reply, cut, json_object, words


class FakeOpenAI(FakeServer):
    """OpenAI on the wire, including its error shape and ``x-request-id``."""

    provider_type = "openai"
    default_model = "gpt-4.1-mini"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def routes(self) -> list[web.RouteDef]:
        async def generate(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "generate")

        async def models(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "models")

        return [web.post("/v1/chat/completions", generate), web.get("/v1/models", models)]

    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An error in OpenAI's shape."""
        return Reply(
            status=status,
            json={"error": {"message": message, "type": type, "param": param, "code": code}},
            headers=headers or {},
        )

    def completion(
        self,
        text: str | None,
        *,
        finish_reason: str = "stop",
        prompt_tokens: int = 12,
        completion_tokens: int = 3,
        refusal: str | None = None,
        model: str | None = None,
    ) -> Reply:
        """A successful chat completion."""
        n = self.next_id()
        return Reply(
            json={
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": 1764190000,
                "model": model or f"{self.models[0]}-2025-04-14",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": refusal},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            },
            headers={"x-request-id": f"req_{n}", "openai-processing-ms": "12"},
        )

    def validate(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply | None:
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if not auth:
                return self.error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            given = auth.removeprefix("Bearer ")
            if given != self.api_key:
                # The real API echoes a masked key; the adapter must scrub even that.
                return self.error(
                    401,
                    f"Incorrect API key provided: {given[:8]}****{given[-4:]}. You can find "
                    "your API key at https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
        if endpoint == "models":
            return None
        body = json_object(request)
        if body is None:
            return self.error(400, "We could not parse the JSON body of your request.")
        for name in ("model", "messages"):
            if name not in body:
                return self.error(400, f"Missing required parameter: '{name}'.", param=name)
        if body["model"] not in self.models:
            return self.error(
                404,
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if "max_tokens" in body and "max_completion_tokens" in body:
            return self.error(400, "max_tokens and max_completion_tokens cannot both be set.")
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            return self.error(400, "'stop' may hold at most 4 sequences.", param="stop")
        return None

    def answer(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply:
        if endpoint == "models":
            return Reply(
                json={
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 1744316542, "owned_by": "system"}
                        for m in self.models
                    ],
                }
            )
        body = request.json
        stop = body.get("stop") or []
        text, _, capped = cut(
            self.text,
            body.get("max_completion_tokens", body.get("max_tokens")),
            [stop] if isinstance(stop, str) else stop,
        )
        prompt = sum(words(str(m.get("content", ""))) for m in body["messages"])
        return self.completion(
            text,
            finish_reason="length" if capped else "stop",
            prompt_tokens=prompt,
            completion_tokens=words(text),
            model=body["model"],
        )
