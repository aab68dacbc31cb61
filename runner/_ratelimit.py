"""Per-provider request and token budgets (``rate_limit`` in the config).

Each budget is a token bucket that refills continuously at its per-minute
rate and holds at most one minute's worth.

- Requests are *reserved*: every attempt takes one unit at once, even into
  debt, and waits until the bucket would have held it.  Reservations make
  waiters leave in arrival order without polling.
- Tokens cannot be known before the answer, so an attempt may start while the
  token bucket is not in debt and its actual usage is charged afterwards
  (:meth:`RateLimiter.charge`).  A burst can overshoot by the calls already
  in flight; the debt then holds back the calls that follow.

The clock and sleep are injected, as everywhere in the dispatcher, so tests
check the waits without waiting.

:class:`SharedLimits` is the seam for limits held elsewhere (cluster mode
keeps them in PostgreSQL, shared by every worker): when a Runner is given
one, each provider's :class:`Admission` replaces its in-memory rate limiter,
and the consecutive failures behind a cooldown are counted there, across
every worker, instead of in the process's registry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from runner.config._model import ProviderConfig, RateLimit


class Admission(Protocol):
    """One provider's limits shared with other processes."""

    async def enter(self) -> None:
        """Wait until the shared rate and concurrency limits admit one more attempt."""
        ...

    def leave(self, tokens: int) -> None:
        """The attempt is over (whatever its outcome); ``tokens`` it used, 0 if unknown.

        Synchronous: it runs in the attempt's cleanup, which may be cancelled.
        """
        ...


class SharedLimits(Protocol):
    """Provider limits and cooldowns shared with other processes."""

    def admission(self, provider: ProviderConfig) -> Admission | None:
        """The provider's shared admission, or ``None`` if it has no shared limit."""
        ...

    def record_success(self, provider_id: str) -> None:
        """A call to the provider succeeded: the shared consecutive-failure count starts again.

        Synchronous and cheap: called after every successful call.
        """
        ...

    def record_failure(self, provider_id: str) -> None:
        """A call failed in a way that counts toward cooldown (``counts_toward_cooldown``).

        The shared count, not this process's, decides whether a cooldown
        starts; one that does reaches every process through :meth:`bind`.
        """
        ...

    def bind(self, cool: Callable[[str, float], None]) -> None:
        """Where the shared cooldowns go: ``cool(provider_id, seconds_left)``."""
        ...


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now


class RateLimiter:
    """The request and token budgets of one provider."""

    __slots__ = ("_clock", "_requests", "_sleep", "_tokens")

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        now = clock()
        self._clock = clock
        self._sleep = sleep
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None

    def reserve(self) -> float:
        """Take one request (and check the token debt); seconds to wait before starting."""
        now = self._clock()
        wait = 0.0
        requests = self._requests
        if requests is not None:
            requests.refill(now)
            requests.level -= 1.0
            if requests.level < 0:
                wait = -requests.level / requests.rate
        tokens = self._tokens
        if tokens is not None:
            tokens.refill(now)
            if tokens.level < 0:
                wait = max(wait, -tokens.level / tokens.rate)
        return wait

    async def acquire(self) -> None:
        """Wait until this provider's budgets allow one more attempt."""
        wait = self.reserve()
        if wait > 0:
            await self._sleep(wait)

    def charge(self, tokens: int) -> None:
        """Charge an attempt's actual token usage against the token budget."""
        bucket = self._tokens
        if bucket is not None and tokens:
            bucket.refill(self._clock())
            bucket.level -= tokens


def rate_limiter_for(
    limit: RateLimit | None,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> RateLimiter | None:
    """A limiter for ``limit``, or ``None`` when the provider has no budgets."""
    if limit is None or (limit.requests_per_minute is None and limit.tokens_per_minute is None):
        return None
    return RateLimiter(limit, clock=clock, sleep=sleep)
