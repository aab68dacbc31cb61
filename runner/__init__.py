"""runner: an async task runner for LLM work.

Layout: ``_config_model``/``_config`` (the config file), ``_registry`` (role ->
provider chains and health), ``_states`` (the task state machine),
``_dispatcher`` and ``_policy`` (running, retrying, falling back),
``_workflow``, ``_metrics_*`` (the writer, stores and queries), ``_api`` (the
Python API), ``_cli`` and the ``*_cli`` modules (the command line), and the
worker's ``_worker_*`` modules.  Provider adapters live in the ``workers``
package.  Everything public is re-exported here.
"""

from __future__ import annotations

from runner._api import Runner, RunnerStatistics, TaskHandle
from runner._context import TaskExecutionContext
from runner._errors import (
    ConfigError,
    ProviderError,
    RunnerError,
    TaskError,
    TransitionError,
    UsageError,
)
from runner._task import ErrorInfo, HistoryEntry, Message, Result, StageResult, Task, Usage
from workers._parameters import Parameters

__all__ = [
    "ConfigError",
    "ErrorInfo",
    "HistoryEntry",
    "Message",
    "Parameters",
    "ProviderError",
    "Result",
    "Runner",
    "RunnerError",
    "RunnerStatistics",
    "StageResult",
    "Task",
    "TaskError",
    "TaskExecutionContext",
    "TaskHandle",
    "TransitionError",
    "Usage",
    "UsageError",
]
