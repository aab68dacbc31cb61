"""What an adapter reads of its config entry: one provider's settings.

The config file's ``providers:`` entries decode straight into
:class:`ProviderConfig`; ``runner.config`` validates them and hands each to
``workers.open_provider``.  Durations are seconds (float).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from workers._parameters import EMPTY, Parameters
from workers._secrets import Secret

ProviderType = Literal["openai", "anthropic", "google", "simulated"]

PositiveSeconds = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]
AtLeastOne = Annotated[int, Meta(ge=1)]


class LatencySpec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Simulated latency in milliseconds: ``mean`` ± uniform ``jitter``."""

    mean: NonNegative = 0.0
    jitter: NonNegative = 0.0


class RateLimit(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Optional per-provider request and token budgets per minute."""

    requests_per_minute: AtLeastOne | None = None
    tokens_per_minute: AtLeastOne | None = None


class Pricing(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per million tokens, for ``cost_usd``."""

    input_per_million: NonNegative = 0.0
    output_per_million: NonNegative = 0.0


class ProviderConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One provider entry of ``providers:``."""

    id: str
    type: ProviderType
    model: str = "simulated"
    api_key: Secret | None = None
    base_url: str | None = None
    parameters: Parameters = EMPTY
    timeout: PositiveSeconds = 60.0
    max_concurrency: AtLeastOne = 16
    rate_limit: RateLimit | None = None
    pricing: Pricing | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Anthropic only: the API version header to send.
    api_version: str = "2023-06-01"
    # Simulated only.
    latency_ms: LatencySpec = LatencySpec()
    failure_rate: Annotated[float, Meta(ge=0, le=1)] = 0.0
    failure_codes: tuple[str, ...] = ("rate_limited", "server_error")
    retry_after: NonNegative | None = None
    seed: int = 0
