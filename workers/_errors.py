"""The bottom of runner's error tree: the root and the error adapters raise.

:class:`RunnerError` is the root of every error runner raises on purpose; it
lives here, in the lowest layer, because :class:`ProviderError` (what every
adapter raises) is one.  ``runner._errors`` draws the whole tree and adds the
errors that only the runner raises.
"""

from __future__ import annotations

import re
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
    "unknown_role",
    "unknown",
]

ERROR_CODES: Final[tuple[str, ...]] = get_args(ErrorCode)

#: Codes the runner retries on the same provider before falling back.
RETRYABLE_CODES: Final[frozenset[str]] = frozenset(
    {"rate_limited", "overloaded", "server_error", "timeout", "connection_error"}
)


class RunnerError(Exception):
    """Root of every error runner raises on purpose."""


class InvalidValueError(RunnerError, ValueError):
    """A value built in Python that the tasks file would refuse; ``field`` names it.

    A ``ValueError`` too, so code that validates input the usual Python way
    catches it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)

    @classmethod
    def from_validation(cls, message: str, prefix: str = "") -> InvalidValueError:
        """From msgspec's ``Expected `int` >= 1 - at `$.max_tokens``` to ``'max_tokens': ...``."""
        at = _AT.match(message)
        what, path = (at["what"], at["path"] or "") if at else (message, "")
        path = f"{prefix}.{path}" if prefix and path else prefix or path
        text = what.replace("`", "").replace(" | null", "")
        text = text[:1].lower() + text[1:]
        return cls(f"'{path}': {text}" if path else text, field=path or None)


# msgspec's validation messages end with "- at `$.path`" when not at the root.
_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)


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
