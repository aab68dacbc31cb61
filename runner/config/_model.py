"""The validated config, as msgspec Structs.

Loading, ``${VAR}`` expansion, durations and validation live in
``runner.config._load``; this module only says what a valid config is.  Durations
are seconds (float) here, whatever form the file used.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from workers._parameters import EMPTY, Parameters
from workers._secrets import Secret
from workers._settings import (
    AtLeastOne,
    LatencySpec,
    NonNegative,
    PositiveSeconds,
    Pricing,
    ProviderConfig,
    ProviderType,
    RateLimit,
)

__all__ = [
    "ClusterConfig",
    "Config",
    "CooldownConfig",
    "LatencySpec",
    "LoggingConfig",
    "MetricsConfig",
    "Pricing",
    "ProviderConfig",
    "ProviderType",
    "RateLimit",
    "RetryConfig",
    "RoleConfig",
    "StageConfig",
    "WorkerConfig",
    "WorkflowConfig",
]


class RoleConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A role's primary provider, its ordered fallbacks and its parameters."""

    provider: str
    fallbacks: tuple[str, ...] = ()
    parameters: Parameters = EMPTY


class RetryConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retry budget per provider, backoff shape, and the longest hint honoured."""

    max_attempts: AtLeastOne = 3
    initial_delay: NonNegative = 0.5
    max_delay: NonNegative = 30.0
    jitter: NonNegative = 1.0
    max_retry_after: NonNegative = 60.0


class CooldownConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Consecutive failures that take a provider out of selection, and for how long."""

    failures: AtLeastOne = 3
    seconds: NonNegative = 30.0


class MetricsConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where metric events go."""

    store: Literal["sqlite", "jsonl", "none"] = "sqlite"
    path: str = ".runner/metrics.db"


class LoggingConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Execution log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class StageConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One workflow stage: a name, the role that runs it, an optional instruction."""

    name: str
    role: str
    instruction: str | None = None


class WorkflowConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named workflow: stages run in order, each seeing the earlier outputs."""

    stages: tuple[StageConfig, ...]


class WorkerConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The long-running worker (``python -m runner worker``)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8787
    auth_token: Secret | None = None
    queue_size: AtLeastOne = 10_000
    max_request_bytes: AtLeastOne = 10 * 1024 * 1024
    journal: str = ".runner/journal.db"
    retention: PositiveSeconds = 7 * 24 * 3600.0
    max_connections: AtLeastOne = 1000
    head_timeout: PositiveSeconds = 20.0
    body_timeout: PositiveSeconds = 60.0


class ClusterConfig(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cluster mode: several workers on one PostgreSQL database (docs/cluster.md).

    ``database`` empty or absent means one machine (SQLite, as without the
    section); write ``${RUNNER_DATABASE_URL:-}`` to let the environment decide.
    """

    database: str | None = None
    lease: PositiveSeconds = 30.0
    shared_limits: bool = True

    @property
    def enabled(self) -> bool:
        """Whether a database is named."""
        return bool(self.database)


class Config(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole, validated config."""

    version: Literal[1] = 1
    defaults: Parameters = EMPTY
    providers: tuple[ProviderConfig, ...]
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    default_provider: str
    #: A task whose role the file does not name is rejected (``unknown_role``)
    #: instead of running on ``default_provider``.
    strict_roles: bool = False
    concurrency: AtLeastOne = 64
    grace_period: NonNegative = 10.0
    retry: RetryConfig = RetryConfig()
    cooldown: CooldownConfig = CooldownConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    workflows: dict[str, WorkflowConfig] = field(default_factory=dict)
    worker: WorkerConfig = WorkerConfig()
    cluster: ClusterConfig = ClusterConfig()
    #: Where the config came from (a path, or "<bundled>"); not a file field.
    source: str = "<memory>"

    def provider(self, provider_id: str) -> ProviderConfig:
        """The provider with this id (the config is validated, so it exists)."""
        for p in self.providers:
            if p.id == provider_id:
                return p
        raise KeyError(provider_id)
