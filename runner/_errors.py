"""The one error tree of runner.

Every exception runner raises on purpose derives from :class:`RunnerError`::

    RunnerError
    ├── ConfigError          the config file is wrong; carries every Problem found
    ├── UsageError           a command line or API call that cannot be served
    │   └── JournalError     the worker's journal refused a write (runner.service)
    ├── TransitionError      an illegal task status move: always a bug in runner
    ├── InvalidValueError    (also a ValueError) a value built in Python that the
    │   │                    tasks file would refuse: Parameters(temperature=9)
    │   └── TaskError        a Task built in Python that cannot run (code invalid_task)
    └── ProviderError        one provider attempt failed; carries code, retryable
                             and retry_after, and is what adapters raise

HTTP and aiohttp failures are turned into :class:`ProviderError` in exactly one
place, ``workers._http``; nothing else maps status codes.
"""

from __future__ import annotations

from workers._errors import (
    ERROR_CODES,
    RETRYABLE_CODES,
    ErrorCode,
    InvalidValueError,
    ProviderError,
    RunnerError,
)

__all__ = [
    "ERROR_CODES",
    "RETRYABLE_CODES",
    "ConfigError",
    "ErrorCode",
    "InvalidValueError",
    "Problem",
    "ProviderError",
    "RunnerError",
    "TaskError",
    "TransitionError",
    "UsageError",
]


class UsageError(RunnerError):
    """A command line or API call that cannot be served as asked."""


class TransitionError(RunnerError):
    """A task status move the state machine does not allow (a bug in runner)."""


class TaskError(InvalidValueError):
    """A Task that cannot run as written; ``field`` names the field (code ``invalid_task``)."""

    code: ErrorCode = "invalid_task"


class ConfigError(RunnerError):
    """The config is wrong; ``problems`` holds every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class Problem:
    """One config problem: where it is, what is wrong and what to do."""

    __slots__ = ("column", "file", "hint", "line", "message", "path")

    def __init__(
        self,
        path: str,
        message: str,
        *,
        hint: str | None = None,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.message = message
        self.hint = hint
        self.file = file
        self.line = line
        self.column = column

    @property
    def location(self) -> str:
        """``file:line:column`` where known, else the file, else empty."""
        if self.file is None:
            return ""
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"

    def render(self) -> str:
        where = self.location
        head = f"{where}: " if where else ""
        path = f"{self.path}: " if self.path else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{head}{path}{self.message}{tail}"

    def __repr__(self) -> str:
        return f"Problem({self.render()!r})"
