"""The execution log: one structlog line per task status move, on stderr.

Each line carries the task id, role, provider, attempt, status, latency and
error code: enough to follow a task through retries and fallbacks, and never
a prompt, an output or a secret (those are not even handed to the logger).

The logger is built per runner with ``structlog.wrap_logger``, not through
``structlog.configure``, so a runner never changes the logging of the program
that embeds it (and holds no module-level state).  Its level filter is
structlog's ``make_filtering_bound_logger``; on top of that
:class:`ExecutionLog` checks the level once, so a filtered-out move costs one
attribute test on the dispatcher's hot path, not a dict of keyword arguments.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

from runner._task import HistoryEntry
from runner.config._model import LoggingConfig

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    config: LoggingConfig, *, stream: TextIO | None = None
) -> FilteringBoundLogger:
    """A logger writing ``config.format`` lines at ``config.level`` or above to ``stream``.

    ``stream`` defaults to ``sys.stderr`` (results may go to stdout).  Console
    lines are coloured only on a terminal; tracebacks are rendered plainly,
    never with local variables, which could hold a key.
    """
    out = stream if stream is not None else sys.stderr
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if config.format == "json":
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=_isatty(out),
                sort_keys=False,
                exception_formatter=structlog.dev.plain_traceback,
            )
        )
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        cache_logger_on_first_use=True,
    )
    return logger


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ExecutionLog:
    """Writes the one line per status move; silent when the level filters ``info`` out."""

    __slots__ = ("_logger", "enabled")

    def __init__(self, logger: FilteringBoundLogger, level: str = "info") -> None:
        self._logger = logger
        self.enabled = _LEVELS.get(level, logging.INFO) <= logging.INFO

    def move(
        self,
        task_id: str,
        role: str | None,
        entry: HistoryEntry,
        *,
        latency_ms: float | None = None,
        workflow: str | None = None,
    ) -> None:
        """Log one move; the caller checks :attr:`enabled` first on the hot path.

        Fields that do not apply (no provider yet, a workflow's role) are left out.
        """
        fields: dict[str, Any] = {"task_id": task_id}
        if workflow is not None:
            fields["workflow"] = workflow
        if role is not None:
            fields["role"] = role
        if entry.provider is not None:
            fields["provider"] = entry.provider
        if entry.attempt is not None:
            fields["attempt"] = entry.attempt
        fields["status"] = entry.status
        if latency_ms is not None:
            fields["latency_ms"] = round(latency_ms, 1)
        if entry.error_code is not None:
            fields["error"] = entry.error_code
        self._logger.info("task", **fields)

    def problem(self, event: str, **fields: Any) -> None:
        """A warning that is not a status move (an adapter bug turned into ``unknown``)."""
        self._logger.warning(event, **fields)
