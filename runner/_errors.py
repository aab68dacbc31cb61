"""The one error tree of runner.

Every exception runner raises on purpose, and every error a caller can see,
derives from :class:`RunnerError`::

    RunnerError
    ├── ConfigError          the config file is wrong; carries every Problem found
    ├── UsageError           a command line or API call that cannot be served
    │   ├── ShuttingDown     the Runner or the worker is shutting down: no new tasks
    │   └── StorageError     the journal or the metrics store cannot be opened,
    │       │                read or written (the message says which file and why)
    │       └── JournalError the worker's journal refused a write (runner.service)
    ├── QueueFull            the worker holds as many unfinished tasks as it may;
    │                        carries room and retry_after (the HTTP 503)
    ├── TransitionError      an illegal task status move: always a bug in runner
    ├── InvalidValueError    (also a ValueError) a value built in Python that the
    │   │                    tasks file would refuse: Parameters(temperature=9)
    │   └── TaskError        a Task built in Python that cannot run (code invalid_task)
    └── ProviderError        one provider attempt failed; carries code, retryable
                             and retry_after, and is what adapters raise

The message of each says what happened and what to do, for the person who
reads it; the underlying cause (an ``sqlite3`` error, an OS error) is chained
as ``__cause__``, never shown as a traceback.  An unexpected exception inside
a task is not raised at all: the task ends ``failed`` with code ``unknown``
and the execution log's debug level says where it was raised.
``RunnerError`` and ``ProviderError`` are defined in ``workers._errors`` so
that adapters, which import nothing from runner, raise into the same tree.

HTTP and transport failures are turned into :class:`ProviderError` in exactly one
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
    "QueueFull",
    "RunnerError",
    "ShuttingDown",
    "StorageError",
    "TaskError",
    "TransitionError",
    "UsageError",
]


class UsageError(RunnerError):
    """A command line or API call that cannot be served as asked."""


class ShuttingDown(UsageError):
    """The Runner (or the worker) is shutting down and accepts no new task."""


class QueueFull(RunnerError):
    """No room for the tasks; ``retry_after`` suggests when to try again (seconds)."""

    def __init__(self, room: int, retry_after: int) -> None:
        self.room = room
        self.retry_after = retry_after
        super().__init__(f"the queue is full ({room} free places); retry after {retry_after} s")


class StorageError(UsageError):
    """The journal or the metrics store cannot be opened, read or written.

    A ``UsageError`` too: the run cannot be served as asked, and the message
    says which file and what to do, so ``except UsageError`` still sees it.
    """


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
