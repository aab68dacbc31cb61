"""A fake Anthropic Messages server (docs/providers.md, `anthropic`).

Serves ``POST /v1/messages`` and ``GET /v1/models``.  Accepts the key in
``x-api-key`` or ``Authorization: Bearer``, requires ``anthropic-version``
(``2023-06-01`` or ``2026-10-21``) and ``max_tokens``, and under
``2026-10-21`` rejects ``temperature``, ``top_p`` and ``top_k``.
"""

from __future__ import annotations

from aiohttp import web

from tests.fakes._server import Endpoint, FakeServer, Received, Reply, cut, json_object, words

VERSIONS = ("2023-06-01", "2026-10-21")


class FakeAnthropic(FakeServer):
    """Anthropic on the wire, including its error shape and ``request-id``."""

    provider_type = "anthropic"
    default_model = "claude-sonnet-4-6"

    def routes(self) -> list[web.RouteDef]:
        async def generate(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "generate")

        async def models(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "models")

        return [web.post("/v1/messages", generate), web.get("/v1/models", models)]

    @staticmethod
    def error(
        status: int,
        type: str,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An error in Anthropic's shape (``error_code`` goes in ``error.details``)."""
        error: dict[str, object] = {"type": type, "message": message}
        if error_code is not None:
            error["details"] = {"error_code": error_code}
        return Reply(
            status=status,
            json={"type": "error", "error": error, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
            headers=headers or {},
        )

    def completion(
        self,
        text: str | None,
        *,
        stop_reason: str = "end_turn",
        stop_sequence: str | None = None,
        input_tokens: int = 12,
        output_tokens: int = 6,
        thinking: str | None = None,
        model: str | None = None,
    ) -> Reply:
        """A successful message; ``text=None`` gives no text block at all."""
        n = self.next_id()
        content: list[dict[str, object]] = []
        if thinking is not None:
            content.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
        if text is not None:
            content.append({"type": "text", "text": text})
        return Reply(
            json={
                "id": f"msg_{n:024d}",
                "type": "message",
                "role": "assistant",
                "model": model or self.models[0],
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "service_tier": "standard",
                },
            },
            headers={"request-id": f"req_{n}", "anthropic-organization-id": "org-fake"},
        )

    def validate(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply | None:
        headers = request.headers
        given = headers.get("x-api-key") or headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and given != self.api_key:
            return self.error(401, "authentication_error", "invalid x-api-key")
        version = headers.get("anthropic-version")
        if version is None:
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if version not in VERSIONS:
            return self.error(
                400, "invalid_request_error", f"anthropic-version: invalid version {version!r}"
            )
        if endpoint == "models":
            return None
        body = json_object(request)
        if body is None:
            return self.error(400, "invalid_request_error", "The request body is not valid JSON.")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return self.error(400, "invalid_request_error", f"{name}: Field required")
        if body["model"] not in self.models:
            return self.error(404, "not_found_error", f"model: {body['model']}")
        for message in body["messages"]:
            if message.get("role") not in ("user", "assistant"):
                return self.error(
                    400,
                    "invalid_request_error",
                    f"messages: Unexpected role {message.get('role')!r}. Allowed roles are "
                    "'user' or 'assistant'. For instructions, use the top-level system parameter.",
                )
        if version == "2026-10-21":
            for name in ("temperature", "top_p", "top_k"):
                if name in body:
                    return self.error(
                        400,
                        "invalid_request_error",
                        f"{name}: Extra inputs are not permitted in API version 2026-10-21",
                    )
        return None

    def answer(self, endpoint: Endpoint, request: Received, model: str | None) -> Reply:
        if endpoint == "models":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2026-02-17T00:00:00Z"}
                for m in self.models
            ]
            return Reply(
                json={
                    "data": data,
                    "has_more": False,
                    "first_id": self.models[0],
                    "last_id": self.models[-1],
                }
            )
        body = request.json
        text, matched, capped = cut(self.text, body["max_tokens"], body.get("stop_sequences", []))
        prompt = words(str(body.get("system", ""))) + sum(
            words(str(m.get("content", ""))) for m in body["messages"]
        )
        reason = "max_tokens" if capped else "stop_sequence" if matched else "end_turn"
        return self.completion(
            text,
            stop_reason=reason,
            stop_sequence=matched,
            input_tokens=prompt,
            output_tokens=words(text),
            model=body["model"],
        )
