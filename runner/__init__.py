"""runner: an async task runner for LLM work.

Layout (docs/architecture.md draws it, the import contract enforces it):
``cli`` (the command line) -> ``service`` (the worker: HTTP API, journal)
-> ``_api`` (:class:`Runner`) -> ``_workflow`` -> ``_dispatcher`` -> the
small core (``_context``, ``_registry``, ``_policy``, ``_ratelimit``,
``_log``) -> ``metrics`` | ``config`` -> ``_tasks_file``, ``_task_check``,
``_states``, ``_task``, ``_errors`` -> ``workers`` (the adapters, which import
nothing from runner).

Everything public is exported here.  The names are loaded on first use
(PEP 562), so ``python -m runner metrics summary`` or ``config check`` does
not pay for the dispatcher, anyio or structlog it never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from runner._lazy import lazy_exports

if TYPE_CHECKING:
    from runner._api import Runner, RunnerStatistics, TaskHandle
    from runner._context import TaskExecutionContext
    from runner._errors import (
        ConfigError,
        InvalidValueError,
        ProviderError,
        QueueFull,
        RunnerError,
        ShuttingDown,
        StorageError,
        TaskError,
        TransitionError,
        UsageError,
    )
    from runner._registry import Notice
    from runner._task import (
        ErrorInfo,
        HistoryEntry,
        Message,
        Result,
        StageResult,
        Task,
        Usage,
    )
    from runner._workflow import stage_prompt
    from workers._parameters import Parameters

#: Public name -> the module that defines it.
_EXPORTS: Final = {
    "ConfigError": "runner._errors",
    "ErrorInfo": "runner._task",
    "HistoryEntry": "runner._task",
    "InvalidValueError": "runner._errors",
    "Message": "runner._task",
    "Notice": "runner._registry",
    "Parameters": "workers._parameters",
    "ProviderError": "runner._errors",
    "QueueFull": "runner._errors",
    "Result": "runner._task",
    "Runner": "runner._api",
    "RunnerError": "runner._errors",
    "RunnerStatistics": "runner._api",
    "ShuttingDown": "runner._errors",
    "StageResult": "runner._task",
    "StorageError": "runner._errors",
    "Task": "runner._task",
    "TaskError": "runner._errors",
    "TaskExecutionContext": "runner._context",
    "TaskHandle": "runner._api",
    "TransitionError": "runner._errors",
    "Usage": "runner._task",
    "UsageError": "runner._errors",
    "stage_prompt": "runner._workflow",
}

__all__ = [
    "ConfigError",
    "ErrorInfo",
    "HistoryEntry",
    "InvalidValueError",
    "Message",
    "Notice",
    "Parameters",
    "ProviderError",
    "QueueFull",
    "Result",
    "Runner",
    "RunnerError",
    "RunnerStatistics",
    "ShuttingDown",
    "StageResult",
    "StorageError",
    "Task",
    "TaskError",
    "TaskExecutionContext",
    "TaskHandle",
    "TransitionError",
    "Usage",
    "UsageError",
    "stage_prompt",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
