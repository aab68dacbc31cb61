"""Retry and fallback decisions: what to do after a failed attempt.

After an attempt fails the dispatcher asks :meth:`RetryPolicy.retry_delay`:
a number means "try the same provider again after this many seconds", ``None``
means "move to the next provider of the chain".  The rules (docs/lifecycle.md, "Task
lifecycle"):

- a non-retryable error falls back at once;
- a retryable one is retried until the provider's attempt budget
  (``retry.max_attempts`` attempts per provider) is spent, then falls back;
- a ``retry_after`` hint is honoured as the wait, unless it is longer than
  ``retry.max_retry_after``: then the task falls back at once rather than sit
  idle;
- otherwise the wait is exponential backoff with jitter, stamina's formula:
  ``min(max_delay, initial_delay * 2 ** (n - 1) + uniform(0, jitter))``.

Why not ``stamina.retry_context`` itself: stamina sleeps through its own
``asyncio.sleep``/``trio.sleep`` with no way to inject a clock, and its test
mode turns every wait into zero, so the delays could not be checked without
waiting in real time.  Its retry loop also wraps a single callable, while a
task's retries are interleaved with status moves, cooldown bookkeeping, one
metric event per attempt and fallback along the chain.  So the dispatcher
keeps the loop and this module computes the waits, and stamina's global
switches still apply: ``stamina.set_active(False)`` turns retries off (every
failure falls back at once) and ``stamina.set_testing(True)`` makes every wait
zero, as they do for any stamina-retried code.

:func:`counts_toward_cooldown` says which failures count against a provider's
health.  Failures caused by the provider or the account (the retryable ones,
``auth_failed``, ``permission_denied``, ``quota_exhausted``, ``not_found``,
``invalid_response``, ``unknown``) do; failures caused by the task itself
(``bad_request``, ``context_length_exceeded``, ``content_filtered``) do not:
one oversized prompt must not take a healthy provider out of service for
everyone.  Cancellation never counts.
"""

from __future__ import annotations

import random
from typing import Final

import stamina

from runner._errors import ProviderError
from runner.config._model import RetryConfig

#: Failures that say something about the task, not about the provider's health.
TASK_SPECIFIC_CODES: Final[frozenset[str]] = frozenset(
    {
        "bad_request",
        "context_length_exceeded",
        "content_filtered",
        "cancelled",
        "invalid_task",
        "unknown_role",
    }
)


def counts_toward_cooldown(code: str) -> bool:
    """Whether a failure with ``code`` counts toward the provider's cooldown."""
    return code not in TASK_SPECIFIC_CODES


class RetryPolicy:
    """The retry/fallback rules of one config, with injectable randomness."""

    __slots__ = ("_base", "_budget", "_initial", "_jitter", "_max_delay", "_max_hint", "_rng")

    def __init__(self, retry: RetryConfig, *, rng: random.Random | None = None) -> None:
        self._budget = retry.max_attempts
        self._initial = retry.initial_delay
        self._max_delay = retry.max_delay
        self._jitter = retry.jitter
        self._max_hint = retry.max_retry_after
        self._base = 2.0
        # A private Random, seeded by the caller in tests, so jitter never
        # touches (or depends on) the global random state.
        self._rng = rng if rng is not None else random.Random()

    @property
    def attempts_per_provider(self) -> int:
        """How many attempts one provider gets before the task falls back."""
        return self._budget

    def backoff(self, attempt: int) -> float:
        """The wait after the ``attempt``-th failed attempt (1-based) on one provider."""
        jitter = self._rng.uniform(0, self._jitter) if self._jitter else 0.0
        try:
            return min(self._max_delay, self._initial * self._base ** (attempt - 1) + jitter)
        except OverflowError:
            return self._max_delay

    def retry_delay(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying the same provider, or ``None`` to fall back.

        ``attempt`` is how many attempts this provider has had for the task,
        the failed one included.
        """
        if not error.retryable or attempt >= self._budget or not stamina.is_active():
            return None
        hint = error.retry_after
        if hint is not None and hint > self._max_hint:
            return None
        if stamina.is_testing():
            return 0.0
        if hint is not None:
            return max(hint, 0.0)
        return self.backoff(attempt)
