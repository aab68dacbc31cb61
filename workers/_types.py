"""The small value types adapters and runner share: messages, usage, finish reasons."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "other"]


class Message(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One chat message; ``system`` messages are moved to the system prompt."""

    role: Literal["system", "user", "assistant"]
    content: str


class Usage(Struct, frozen=True, kw_only=True):
    """Token counts of one response (or the sum over a task's stages)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
