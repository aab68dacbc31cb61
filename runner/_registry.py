"""Which provider serves a role: chains, merged parameters and provider health.

Built once from a validated :class:`~runner.config._model.Config`.  Each role
gets its chain (primary, fallbacks, then ``default_provider`` unless already
in it) with parameters merged ``defaults < provider < role``; the task's own
parameters go on top at dispatch.  A role the config does not name resolves to
the default provider's chain.

A provider whose key is missing (``workers._settings.missing_key``) is left
out of every chain; :func:`stranded_roles` names the roles that leaves with
no provider at all, which :meth:`Registry.from_config` refuses.

What a person watching a run should know about routing and health (a
provider left out, a role the config does not name, a cooldown starting or
ending) is told once, as a :class:`Notice`, to :attr:`Registry.notify`.

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
from typing import Literal

import msgspec
from msgspec import Struct

from runner._errors import UsageError
from runner.config._model import Config, ProviderConfig
from workers._parameters import Parameters
from workers._settings import missing_key

#: What the chain of roles the config does not name is called in messages.
DEFAULT_ROLE = "default"

NoticeKind = Literal["provider_disabled", "unknown_role", "cooldown_started", "cooldown_ended"]


class Notice(Struct, frozen=True, kw_only=True):
    """Something about routing or provider health worth telling once, in words."""

    kind: NoticeKind
    message: str
    provider: str | None = None
    role: str | None = None
    #: For ``cooldown_started``: how long the provider is out of selection.
    seconds: float | None = None


def disabled_providers(config: Config) -> dict[str, str]:
    """Provider id -> the variable its missing key should come from, in config order."""
    return {p.id: v for p in config.providers if (v := missing_key(p)) is not None}


def chain_ids(config: Config) -> dict[str | None, tuple[str, ...]]:
    """Every role's provider ids in the order tried; key ``None``: the roles not named."""
    chains: dict[str | None, tuple[str, ...]] = {}
    default_id = config.default_provider
    for role, rc in config.roles.items():
        ids: list[str] = []
        for pid in (rc.provider, *rc.fallbacks, default_id):
            if pid not in ids:
                ids.append(pid)
        chains[role] = tuple(ids)
    chains[None] = (default_id,)
    return chains


def stranded_roles(config: Config) -> dict[str | None, tuple[str, ...]]:
    """Roles left with no provider once those without a key are out, with their chains.

    Key ``None`` stands for the roles the config does not name (they run on
    ``default_provider`` alone).
    """
    disabled = disabled_providers(config)
    if not disabled:
        return {}
    return {role: ids for role, ids in chain_ids(config).items() if all(p in disabled for p in ids)}


def disabled_message(provider_id: str, variable: str) -> str:
    """The one line that says a provider is left out for its missing key."""
    return (
        f"provider {provider_id} is disabled: {variable} is not set"
        " (its roles use the rest of their chains)"
    )


def stranded_message(config: Config, stranded: dict[str | None, tuple[str, ...]]) -> str:
    """One sentence naming the roles with no provider left and the variables to set."""
    disabled = disabled_providers(config)
    if len(disabled) == len(config.providers):
        return f"no provider has its key: set {', '.join(dict.fromkeys(disabled.values()))}"
    named = [role for role in stranded if role is not None]
    parts = [("role " if len(named) == 1 else "roles ") + ", ".join(named)] if named else []
    if None in stranded:
        parts.append(
            "the roles the config does not name (they run on default_provider"
            f" {config.default_provider})"
        )
    variables = list(dict.fromkeys(disabled[p] for ids in stranded.values() for p in ids))
    return (
        f"no provider with a key is left for {' and '.join(parts)}: set"
        f" {', '.join(variables)}, or give those roles a provider whose key is set"
    )


class Route(Struct, frozen=True, kw_only=True):
    """One provider of a chain, with the parameters it runs this role with."""

    provider: ProviderConfig
    parameters: Parameters


class Chain(Struct, frozen=True, kw_only=True):
    """A role's providers in the order they are tried."""

    role: str
    routes: tuple[Route, ...]
    #: ``Selection(i, routes[i])`` for every position, made once: what nearly
    #: every :meth:`Registry.select` returns (a chain's providers are rarely
    #: cooling down), without a new Struct per attempt.
    ready: tuple[Selection, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ready) != len(self.routes):
            ready = tuple(Selection(i, route) for i, route in enumerate(self.routes))
            msgspec.structs.force_setattr(self, "ready", ready)

    @property
    def provider_ids(self) -> tuple[str, ...]:
        return tuple(r.provider.id for r in self.routes)


class Selection(Struct, frozen=True, gc=False):
    """The outcome of :meth:`Registry.select`.

    Either ``route`` (at ``index`` of the chain) is usable now, or ``route`` is
    ``None`` and ``wait_until`` is the clock time the earliest of the remaining
    providers leaves its cooldown.  ``gc=False``: one per attempt, alive for
    the whole call, and it only points at config data, never back.
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

    __slots__ = (
        "_chains",
        "_clock",
        "_cooldown",
        "_default",
        "_health",
        "_threshold",
        "_unknown",
        "disabled",
        "notify",
    )

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
        # Roles already told about: one notice per role per run.
        self._unknown: set[str] = set()
        #: Providers left out for a missing key: id -> its variable.
        self.disabled: dict[str, str] = {}
        #: Called with each :class:`Notice`; ``None`` drops them.
        self.notify: Callable[[Notice], None] | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep_disabled: bool = False,
    ) -> Registry:
        """Precompute every role's chain and merged parameters.

        Providers without their key are left out of the chains (kept, for
        display, with ``keep_disabled``); a role left with no provider at all
        raises :class:`UsageError` naming it.
        """
        by_id = {p.id: p for p in config.providers}
        disabled = {} if keep_disabled else disabled_providers(config)
        if disabled:
            stranded = stranded_roles(config)
            if stranded:
                raise UsageError(stranded_message(config, stranded))

        def route(provider_id: str, role_params: Parameters | None) -> Route:
            provider = by_id[provider_id]
            merged = provider.parameters.over(config.defaults)
            if role_params is not None:
                merged = role_params.over(merged)
            return Route(provider=provider, parameters=merged)

        chains: dict[str, Chain] = {}
        default_routes: tuple[Route, ...] = ()
        for role, ids in chain_ids(config).items():
            rc = None if role is None else config.roles[role]
            routes = tuple(
                route(p, None if rc is None else rc.parameters) for p in ids if p not in disabled
            )
            if role is None:
                default_routes = routes
            else:
                chains[role] = Chain(role=role, routes=routes)
        registry = cls(
            chains,
            Chain(role=DEFAULT_ROLE, routes=default_routes),
            failures=config.cooldown.failures,
            cooldown=config.cooldown.seconds,
            clock=clock,
        )
        registry.disabled = disabled
        return registry

    def roles(self) -> tuple[str, ...]:
        """The roles the config names, in file order."""
        return tuple(self._chains)

    def chain(self, role: str | None) -> Chain:
        """The chain for ``role``; an unknown or missing role gets the default's.

        The first time a role the config does not name comes by, a notice
        says where its tasks go instead.
        """
        if role is None:
            return self._default
        chain = self._chains.get(role)
        if chain is not None:
            return chain
        if role not in self._unknown:
            self._unknown.add(role)
            ids = self._default.provider_ids
            self._tell(
                "unknown_role",
                f"role '{role}' is not in the config: its tasks run on the default provider"
                f" {ids[0] if ids else '(none)'}",
                role=role,
            )
        return self._default

    def _tell(
        self,
        kind: NoticeKind,
        message: str,
        *,
        provider: str | None = None,
        role: str | None = None,
        seconds: float | None = None,
    ) -> None:
        notify = self.notify
        if notify is not None:
            notify(
                Notice(kind=kind, message=message, provider=provider, role=role, seconds=seconds)
            )

    def select(self, chain: Chain, start: int = 0) -> Selection:
        """The first route at or after ``start`` that is not cooling down.

        When every remaining route is cooling down, the selection has no route
        and says when the earliest recovers, so the caller can wait for it.
        """
        routes = chain.routes
        health = self._health
        if start < len(routes) and health[routes[start].provider.id].cooled_until == 0.0:
            return chain.ready[start]  # the loop's first turn, for the usual answer
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
                pid = route.provider.id
                self._tell(
                    "cooldown_ended", f"provider {pid} is back after its cooldown", provider=pid
                )
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
        self._tell(
            "cooldown_started",
            f"provider {provider_id} is cooling down for {self._cooldown:g} s after"
            f" {h.failures} consecutive failures",
            provider=provider_id,
            seconds=self._cooldown,
        )
        return True

    def cool(self, provider_id: str, seconds: float) -> None:
        """Cool the provider down for ``seconds`` from now (a cooldown decided elsewhere).

        An unknown provider is ignored; a longer cooldown already running is
        kept.  A provider that was not cooling is told about once, as a
        cooldown this registry starts is.
        """
        h = self._health.get(provider_id)
        if h is None or seconds <= 0:
            return
        now = self._clock()
        if h.cooled_until <= now:
            self._tell(
                "cooldown_started",
                f"provider {provider_id} is cooling down for {seconds:.0f} s"
                " (its consecutive failures across the cluster)",
                provider=provider_id,
                seconds=seconds,
            )
        h.cooled_until = max(h.cooled_until, now + seconds)

    def statistics(self) -> dict[str, HealthSnapshot]:
        """Every provider's health now, as immutable snapshots."""
        return {
            pid: HealthSnapshot(
                consecutive_failures=h.failures,
                cooling_until=h.cooled_until or None,
            )
            for pid, h in self._health.items()
        }
