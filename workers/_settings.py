"""What an adapter reads of its config entry: one provider's settings.

The config file's ``providers:`` entries decode straight into
:class:`ProviderConfig`; ``runner.config`` validates them and hands each to
``workers.open_provider``.  Durations are seconds (float).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

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


#: Each hosted type's official API host: the only place a key found in the
#: environment (rather than written in the config) is ever sent.
OFFICIAL_HOSTS: Final[dict[str, str]] = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "google": "generativelanguage.googleapis.com",
}

#: The variables a hosted type's key is read from when the entry has no
#: ``api_key``, in order (the names the official SDKs and LiteLLM read).
KEY_VARIABLES: Final[dict[str, tuple[str, ...]]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}


def official_host(config: ProviderConfig) -> bool:
    """Whether ``config`` talks to its type's official API (no ``base_url``, or that host)."""
    host = OFFICIAL_HOSTS.get(config.type)
    if host is None:
        return False
    if config.base_url is None:
        return True
    url = urlsplit(config.base_url)
    return url.scheme == "https" and url.hostname == host


def missing_key(config: ProviderConfig) -> str | None:
    """The variable(s) whose key this provider lacks, or ``None`` when it can run.

    A key that should come from the environment but is not set is kept as an
    empty :class:`Secret` naming its variable, so the provider can be left out
    (and the variable named) instead of failing every call with a 401.
    """
    key = config.api_key
    if key is None or key:
        return None
    return key.source or "api_key"
