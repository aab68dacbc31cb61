"""The small value types adapters and runner share: messages, usage, finish reasons.

``gc=False`` on each: they hold only strings and numbers, so they can never
be part of a reference cycle; the garbage collector need not track them.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import Struct

from workers._errors import InvalidValueError

FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "other"]


class Message(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One chat message; ``system`` messages are moved to the system prompt.

    Built in Python with a role or content msgspec would refuse, it raises
    :class:`~workers._errors.InvalidValueError` naming the field.
    """

    role: Literal["system", "user", "assistant"]
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES or type(self.content) is not str:
            try:
                msgspec.convert({"role": self.role, "content": self.content}, Message)
            except msgspec.ValidationError as exc:
                raise InvalidValueError.from_validation(str(exc)) from None


_ROLES: Final = frozenset({"system", "user", "assistant"})


class Usage(Struct, frozen=True, kw_only=True, gc=False):
    """Token counts of one response (or the sum over a task's stages)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
