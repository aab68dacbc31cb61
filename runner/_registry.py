"""Which provider serves a role: chains, merged parameters and provider health.

Built once from a validated :class:`~runner.config._model.Config`.  Each role
gets its chain (primary, fallbacks, then ``default_provider`` unless already
in it) with parameters merged ``defaults < provider < role``; the task's own
parameters go on top at dispatch.  A role the config does not name resolves to
the default provider's chain.

Selection is on every task's hot path, so everything is precomputed here and
:meth:`Registry.select` only reads two floats per route: no parsing, copying
or logging per call.  Health is one small mutable record per provider,
changed only by synchronous methods, so concurrent tasks on one event loop see
consistent state without locks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from msgspec import Struct

from runner.config._model import Config, ProviderConfig
from workers._parameters import Parameters


class Route(Struct, frozen=True, kw_only=True):
    """One provider of a chain, with the parameters it runs this role with."""

    provider: ProviderConfig
    parameters: Parameters


class Chain(Struct, frozen=True, kw_only=True):
    """A role's providers in the order they are tried."""

    role: str
    routes: tuple[Route, ...]

    @property
    def provider_ids(self) -> tuple[str, ...]:
        return tuple(r.provider.id for r in self.routes)


class Selection(Struct, frozen=True):
    """The outcome of :meth:`Registry.select`.

    Either ``route`` (at ``index`` of the chain) is usable now, or ``route`` is
    ``None`` and ``wait_until`` is the clock time the earliest of the remaining
    providers leaves its cooldown.
    """

    index: int
    route: Route | None
    wait_until: float | None = None


class HealthSnapshot(Struct, frozen=True, kw_only=True):
    """A provider's health at one moment (see :meth:`Registry.statistics`)."""

    consecutive_failures: int
    cooling_until: float | None


class _Health:
    __slots__ = ("cooled_until", "failures")

    def __init__(self) -> None:
        self.failures = 0
        # 0.0 means "not cooling": select() then needs no clock read at all.
        self.cooled_until = 0.0


class Registry:
    """Role chains and provider health for one config."""

    __slots__ = ("_chains", "_clock", "_cooldown", "_default", "_health", "_threshold")

    def __init__(
        self,
        chains: dict[str, Chain],
        default: Chain,
        *,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chains = chains
        self._default = default
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._health: dict[str, _Health] = {}
        for chain in (*chains.values(), default):
            for route in chain.routes:
                self._health.setdefault(route.provider.id, _Health())

    @classmethod
    def from_config(
        cls, config: Config, *, clock: Callable[[], float] = time.monotonic
    ) -> Registry:
        """Precompute every role's chain and merged parameters."""
        by_id = {p.id: p for p in config.providers}
        default_id = config.default_provider

        def route(provider_id: str, role_params: Parameters | None) -> Route:
            provider = by_id[provider_id]
            merged = provider.parameters.over(config.defaults)
            if role_params is not None:
                merged = role_params.over(merged)
            return Route(provider=provider, parameters=merged)

        chains: dict[str, Chain] = {}
        for role, rc in config.roles.items():
            ids: list[str] = []
            for pid in (rc.provider, *rc.fallbacks, default_id):
                if pid not in ids:
                    ids.append(pid)
            chains[role] = Chain(role=role, routes=tuple(route(p, rc.parameters) for p in ids))
        default = Chain(role="default", routes=(route(default_id, None),))
        return cls(
            chains,
            default,
            failures=config.cooldown.failures,
            cooldown=config.cooldown.seconds,
            clock=clock,
        )

    def roles(self) -> tuple[str, ...]:
        """The roles the config names, in file order."""
        return tuple(self._chains)

    def chain(self, role: str | None) -> Chain:
        """The chain for ``role``; an unknown or missing role gets the default's."""
        if role is None:
            return self._default
        return self._chains.get(role, self._default)

    def select(self, chain: Chain, start: int = 0) -> Selection:
        """The first route at or after ``start`` that is not cooling down.

        When every remaining route is cooling down, the selection has no route
        and says when the earliest recovers, so the caller can wait for it.
        """
        routes = chain.routes
        health = self._health
        now = -math.inf
        earliest = math.inf
        for i in range(start, len(routes)):
            route = routes[i]
            h = health[route.provider.id]
            until = h.cooled_until
            if until == 0.0:
                return Selection(i, route)
            if now == -math.inf:
                now = self._clock()
            if until <= now:
                # The cooldown is over: the provider gets a fresh start.
                h.cooled_until = 0.0
                h.failures = 0
                return Selection(i, route)
            earliest = min(earliest, until)
        if earliest == math.inf:
            raise IndexError(f"no route at or after {start} in the {chain.role!r} chain")
        return Selection(start, None, earliest)

    def record_success(self, provider_id: str) -> None:
        """A call succeeded: the consecutive-failure count starts again."""
        h = self._health[provider_id]
        h.failures = 0

    def record_failure(self, provider_id: str) -> bool:
        """A call failed; returns True when this failure starts a cooldown."""
        h = self._health[provider_id]
        h.failures += 1
        if h.failures < self._threshold or self._cooldown <= 0:
            return False
        now = self._clock()
        if h.cooled_until > now:
            return False  # already cooling: a late failure does not extend it
        h.cooled_until = now + self._cooldown
        return True

    def statistics(self) -> dict[str, HealthSnapshot]:
        """Every provider's health now, as immutable snapshots."""
        return {
            pid: HealthSnapshot(
                consecutive_failures=h.failures,
                cooling_until=h.cooled_until or None,
            )
            for pid, h in self._health.items()
        }
