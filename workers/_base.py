"""What every provider adapter speaks: one normalised request and response.

The dispatcher builds a :class:`CompletionRequest` (system prompt, messages,
merged parameters), hands it to a :class:`Provider`, and gets back a
:class:`CompletionResponse` or a :class:`runner._errors.ProviderError`.
Adapters never retry; the dispatcher owns retries and fallback.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from msgspec import Struct

from workers._parameters import EMPTY, Parameters
from workers._types import FinishReason, Message, Usage


class CompletionRequest(Struct, frozen=True, kw_only=True, gc=False):
    """A provider-neutral chat completion request.

    ``gc=False`` (here and on the response): plain data that can never be part
    of a reference cycle, made once per attempt.

    ``messages`` holds only ``user`` and ``assistant`` turns; a system prompt is
    in ``system``.  ``task_id`` and ``attempt`` identify the attempt for the
    simulated provider's determinism and for logs; adapters do not send them.
    """

    messages: tuple[Message, ...]
    system: str | None = None
    parameters: Parameters = EMPTY
    task_id: str = ""
    attempt: int = 1


class CompletionResponse(Struct, frozen=True, kw_only=True, gc=False):
    """A provider-neutral completion."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    response_id: str | None = None


@runtime_checkable
class Provider(Protocol):
    """One configured provider: complete, check credentials, close."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        """Run one attempt; raise ``ProviderError`` on any failure."""
        ...

    async def check_credentials(self) -> None:
        """Check the key without generating text; raise ``ProviderError`` if it fails."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...
