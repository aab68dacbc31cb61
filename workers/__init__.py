"""Provider adapters: how runner talks to LLM providers.

This is the lowest layer of the project: it imports nothing from ``runner``,
so a custom provider needs only ``workers``.  Layout: ``_types``,
``_parameters``, ``_settings``, ``_errors`` and ``_secrets`` (the values an
adapter reads and raises), ``_base`` (the normalised request/response and the
``Provider`` protocol), ``_transport`` (the keep-alive HTTP/1.1 client),
``_http`` (the adapters' shared base and the one place where HTTP and
transport failures become ``ProviderError``), then one
module per provider: ``openai`` (also any OpenAI-compatible server),
``anthropic``, ``google`` and ``simulated`` (no network; scriptable latency and
faults).
"""

from __future__ import annotations

from workers._base import CompletionRequest, CompletionResponse, Provider
from workers._errors import (
    ERROR_CODES,
    RETRYABLE_CODES,
    ErrorCode,
    InvalidValueError,
    ProviderError,
    RunnerError,
)
from workers._factory import open_provider
from workers._parameters import Parameters
from workers._secrets import Secret, scrub
from workers._settings import LatencySpec, Pricing, ProviderConfig, ProviderType, RateLimit
from workers._types import FinishReason, Message, Usage

__all__ = [
    "ERROR_CODES",
    "RETRYABLE_CODES",
    "CompletionRequest",
    "CompletionResponse",
    "ErrorCode",
    "FinishReason",
    "InvalidValueError",
    "LatencySpec",
    "Message",
    "Parameters",
    "Pricing",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderType",
    "RateLimit",
    "RunnerError",
    "Secret",
    "Usage",
    "open_provider",
    "scrub",
]
