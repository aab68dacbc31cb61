"""Role chains, merged parameters, cooldown and selection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner import Parameters
from runner._registry import Registry
from runner.config import Config, CooldownConfig, ProviderConfig, RoleConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sim(pid: str, **params: object) -> ProviderConfig:
    return ProviderConfig(id=pid, type="simulated", parameters=Parameters(**params))  # type: ignore[arg-type]


def make_config(**kw: object) -> Config:
    base: dict[str, object] = {
        "providers": (sim("a", temperature=0.5), sim("b"), sim("c"), sim("d")),
        "roles": {
            "coder": RoleConfig(
                provider="a", fallbacks=("b", "c"), parameters=Parameters(top_p=0.9)
            ),
            "reviewer": RoleConfig(provider="b", fallbacks=("d",)),
            "planner": RoleConfig(provider="d"),
        },
        "default_provider": "d",
        "defaults": Parameters(temperature=0.2, max_tokens=100),
        "cooldown": CooldownConfig(failures=2, seconds=30),
    }
    base.update(kw)
    return Config(**base)  # type: ignore[arg-type]


def test_chain_is_primary_fallbacks_then_default() -> None:
    """A chain lists the primary, its fallbacks, then the default provider once."""
    reg = Registry.from_config(make_config())
    assert reg.chain("coder").provider_ids == ("a", "b", "c", "d")
    assert reg.chain("reviewer").provider_ids == ("b", "d")
    assert reg.chain("planner").provider_ids == ("d",)


def test_unknown_role_resolves_to_default_provider() -> None:
    """A role the config does not name runs on the default provider."""
    reg = Registry.from_config(make_config())
    assert reg.chain("translator").provider_ids == ("d",)
    assert reg.chain(None).provider_ids == ("d",)


def test_parameters_merge_defaults_provider_role() -> None:
    """Role parameters beat provider parameters, which beat defaults."""
    reg = Registry.from_config(make_config())
    first = reg.chain("coder").routes[0].parameters
    assert first == Parameters(temperature=0.5, top_p=0.9, max_tokens=100)
    second = reg.chain("coder").routes[1].parameters
    assert second == Parameters(temperature=0.2, top_p=0.9, max_tokens=100)


def test_cooldown_after_consecutive_failures_skips_provider() -> None:
    """After cooldown.failures failures in a row the provider is skipped until it recovers."""
    clock = FakeClock()
    reg = Registry.from_config(make_config(), clock=clock)
    chain = reg.chain("coder")
    assert reg.record_failure("a") is False
    assert reg.record_failure("a") is True
    sel = reg.select(chain)
    assert (sel.index, sel.route and sel.route.provider.id) == (1, "b")
    clock.now += 30
    sel = reg.select(chain)
    assert (sel.index, sel.route and sel.route.provider.id) == (0, "a")
    assert reg.statistics()["a"].consecutive_failures == 0


def test_success_resets_the_failure_count() -> None:
    """A success between failures means the count starts again."""
    reg = Registry.from_config(make_config(), clock=FakeClock())
    reg.record_failure("a")
    reg.record_success("a")
    assert reg.record_failure("a") is False


def test_all_cooling_reports_earliest_recovery() -> None:
    """When every provider of a chain cools down, selection says when the first recovers."""
    clock = FakeClock()
    reg = Registry.from_config(make_config(), clock=clock)
    for pid in ("b", "d"):
        reg.record_failure(pid)
        clock.now += 1
        reg.record_failure(pid)
    sel = reg.select(reg.chain("reviewer"))
    assert sel.route is None
    assert sel.wait_until == pytest.approx(1001.0 + 30)


def test_late_failure_does_not_extend_cooldown() -> None:
    """A failure reported while already cooling leaves the recovery time alone."""
    clock = FakeClock()
    reg = Registry.from_config(make_config(), clock=clock)
    reg.record_failure("a")
    reg.record_failure("a")
    clock.now += 10
    assert reg.record_failure("a") is False
    assert reg.statistics()["a"].cooling_until == pytest.approx(1030.0)


def test_select_past_the_end_raises() -> None:
    """Asking beyond the chain is a caller bug and says so."""
    reg = Registry.from_config(make_config())
    with pytest.raises(IndexError):
        reg.select(reg.chain("planner"), 1)


IDS = ["p0", "p1", "p2", "p3", "p4", "p5"]
temps = st.none() | st.floats(min_value=0, max_value=2)
params = st.builds(
    Parameters,
    temperature=temps,
    top_p=st.none() | st.floats(min_value=0, max_value=1),
    max_tokens=st.none() | st.integers(min_value=1, max_value=10_000),
    seed=st.none() | st.integers(),
)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    providers = tuple(
        ProviderConfig(id=pid, type="simulated", parameters=draw(params)) for pid in IDS
    )
    default = draw(st.sampled_from(IDS))
    roles = {}
    for role in draw(st.lists(st.sampled_from(["coder", "planner", "x", "y"]), unique=True)):
        chain = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True))
        roles[role] = RoleConfig(
            provider=chain[0], fallbacks=tuple(chain[1:]), parameters=draw(params)
        )
    return Config(providers=providers, roles=roles, default_provider=default, defaults=draw(params))


@given(configs())
def test_every_chain_has_no_repeats_and_ends_in_default(config: Config) -> None:
    """Property: chains never repeat a provider and always end with the default provider."""
    reg = Registry.from_config(config)
    for role in (*reg.roles(), "unknown-role"):
        ids = reg.chain(role).provider_ids
        assert len(ids) == len(set(ids))
        assert config.default_provider in ids
        own = config.roles.get(role)
        if own is None or config.default_provider not in (own.provider, *own.fallbacks):
            assert ids[-1] == config.default_provider


@given(configs())
def test_merged_parameters_follow_precedence(config: Config) -> None:
    """Property: each field comes from the highest layer setting it (role, provider, defaults)."""
    reg = Registry.from_config(config)
    for role in reg.roles():
        rc = config.roles[role]
        for route in reg.chain(role).routes:
            layers = (rc.parameters, route.provider.parameters, config.defaults)
            for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
                expected = next(
                    (getattr(p, name) for p in layers if getattr(p, name) is not None), None
                )
                assert getattr(route.parameters, name) == expected


def test_a_cooldown_decided_elsewhere_is_told_once_and_steers_selection() -> None:
    """cool(): the provider is skipped until then; one notice, none for a repeat while cooling."""
    clock = FakeClock()
    reg = Registry.from_config(make_config(), clock=clock)
    told: list[tuple[str, str | None, float | None]] = []
    reg.notify = lambda n: told.append((n.kind, n.provider, n.seconds))
    reg.cool("a", 30.0)
    reg.cool("a", 29.5)  # the same cooldown, from the notification
    assert reg.select(reg.chain("coder")).route.provider.id == "b"  # type: ignore[union-attr]
    assert told == [("cooldown_started", "a", 30.0)]
    clock.now += 30
    assert reg.select(reg.chain("coder")).route.provider.id == "a"  # type: ignore[union-attr]
    reg.cool("a", 10.0)
    assert [kind for kind, _, _ in told] == [
        "cooldown_started",
        "cooldown_ended",
        "cooldown_started",
    ]
