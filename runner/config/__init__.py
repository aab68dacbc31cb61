"""The config file: discovery, YAML with positions, ``${VAR}`` expansion, validation.

``_model`` says what a valid config is (msgspec Structs; the provider entry is
``workers.ProviderConfig``), ``_yaml`` parses with line/column positions,
``_env`` expands variables, ``_schema`` checks the parsed tree against the
Structs, and ``_load`` ties them together (``load``, ``discover``).

The names below are the public surface; they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from runner._lazy import lazy_exports

if TYPE_CHECKING:
    from runner.config._load import (
        BUNDLED_NOTICE,
        discover_config,
        load_config,
        load_config_text,
    )
    from runner.config._model import (
        Config,
        CooldownConfig,
        LatencySpec,
        LoggingConfig,
        MetricsConfig,
        Pricing,
        ProviderConfig,
        RateLimit,
        RetryConfig,
        RoleConfig,
        StageConfig,
        WorkerConfig,
        WorkflowConfig,
    )

#: Public name -> the module that defines it (loaded on first use).
_EXPORTS: Final = {
    "BUNDLED_NOTICE": "runner.config._load",
    "Config": "runner.config._model",
    "CooldownConfig": "runner.config._model",
    "LatencySpec": "runner.config._model",
    "LoggingConfig": "runner.config._model",
    "MetricsConfig": "runner.config._model",
    "Pricing": "runner.config._model",
    "ProviderConfig": "runner.config._model",
    "RateLimit": "runner.config._model",
    "RetryConfig": "runner.config._model",
    "RoleConfig": "runner.config._model",
    "StageConfig": "runner.config._model",
    "WorkerConfig": "runner.config._model",
    "WorkflowConfig": "runner.config._model",
    "discover_config": "runner.config._load",
    "load_config": "runner.config._load",
    "load_config_text": "runner.config._load",
}

__all__ = [
    "BUNDLED_NOTICE",
    "Config",
    "CooldownConfig",
    "LatencySpec",
    "LoggingConfig",
    "MetricsConfig",
    "Pricing",
    "ProviderConfig",
    "RateLimit",
    "RetryConfig",
    "RoleConfig",
    "StageConfig",
    "WorkerConfig",
    "WorkflowConfig",
    "discover_config",
    "load_config",
    "load_config_text",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
