"""The one error tree of runner.

Every exception runner raises on purpose derives from :class:`RunnerError`::

    RunnerError
    ├── ConfigError          the config file is wrong; carries every Problem found
    ├── UsageError           a command line or API call that cannot be served
    ├── TransitionError      an illegal task status move: always a bug in runner
    ├── TaskError            a task line or Task that cannot run (code invalid_task)
    └── ProviderError        one provider attempt failed; carries code, retryable
                             and retry_after, and is what adapters raise

HTTP and aiohttp failures are turned into :class:`ProviderError` in exactly one
place, ``workers._http``; nothing else maps status codes.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ErrorCode = Literal[
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "connection_error",
    "auth_failed",
    "permission_denied",
    "bad_request",
    "not_found",
    "context_length_exceeded",
    "content_filtered",
    "quota_exhausted",
    "invalid_response",
    "cancelled",
    "invalid_task",
    "unknown",
]

ERROR_CODES: Final[tuple[str, ...]] = get_args(ErrorCode)

#: Codes the runner retries on the same provider before falling back.
RETRYABLE_CODES: Final[frozenset[str]] = frozenset(
    {"rate_limited", "overloaded", "server_error", "timeout", "connection_error"}
)


class RunnerError(Exception):
    """Root of every error runner raises on purpose."""


class UsageError(RunnerError):
    """A command line or API call that cannot be served as asked."""


class TransitionError(RunnerError):
    """A task status move the state machine does not allow (a bug in runner)."""


class TaskError(RunnerError):
    """A task that cannot run as written (reported with code ``invalid_task``)."""

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


class ProviderError(RunnerError):
    """One provider attempt failed.

    ``code`` is one of :data:`ERROR_CODES`; ``retryable`` says whether the same
    provider may be tried again; ``retry_after`` is the provider's own hint in
    seconds (``None`` when it gave none).  ``message`` is already scrubbed of
    the provider's key.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        provider: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.code: ErrorCode = code
        self.message = message
        self.provider = provider
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        who = f"{self.provider}: " if self.provider else ""
        return f"{who}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProviderError(code={self.code!r}, provider={self.provider!r}, "
            f"retryable={self.retryable}, retry_after={self.retry_after}, "
            f"status={self.status}, message={self.message!r})"
        )
