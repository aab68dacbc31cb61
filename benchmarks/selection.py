"""Selection: role -> chain -> first usable provider, with the task's parameters merged.

This is what the dispatcher does for every task before the first attempt:
``registry.chain(role)``, ``registry.select(chain)`` and the task's
parameters laid over the route's merged ones.  Each call is timed on its own
with ``perf_counter_ns`` (so the figures include the timer's own cost, which
is measured and reported as ``timer overhead``); calls cycle through known
roles, an unknown role and tasks with and without their own parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from benchmarks._harness import Case, Metric, Settings, Target, collect, percentile
from runner import Parameters
from runner._registry import Registry
from runner.config import Config, ProviderConfig, RoleConfig

ROLES = ("coder", "reviewer", "planner", "clarifier", "translator")


def bench_config() -> Config:
    """Six providers, four roles with fallbacks and parameters at every layer."""
    providers = tuple(
        ProviderConfig(id=f"p{i}", type="simulated", parameters=Parameters(temperature=0.1 * i))
        for i in range(6)
    )
    return Config(
        providers=providers,
        roles={
            "coder": RoleConfig(
                provider="p0", fallbacks=("p1", "p2"), parameters=Parameters(top_p=0.9)
            ),
            "reviewer": RoleConfig(provider="p1", fallbacks=("p3",)),
            "planner": RoleConfig(provider="p2", parameters=Parameters(max_tokens=512)),
            "clarifier": RoleConfig(provider="p4"),
        },
        default_provider="p5",
        defaults=Parameters(temperature=0.2, max_tokens=1024),
    )


def _timer_overhead(calls: int) -> float:
    """Median cost of two back-to-back ``perf_counter_ns`` reads, in ns."""
    clock = time.perf_counter_ns
    costs = []
    for _ in range(calls):
        t0 = clock()
        t1 = clock()
        costs.append(t1 - t0)
    costs.sort()
    return float(costs[len(costs) // 2])


def measure(calls: int) -> dict[str, float]:
    """One repetition: ``calls`` individually timed selections; p50, p99, mean, timer cost."""
    registry = Registry.from_config(bench_config())
    own = (None, Parameters(temperature=0.0), None, Parameters(seed=7, max_tokens=64))
    inputs = [(ROLES[i % len(ROLES)], own[i % len(own)]) for i in range(calls)]
    clock = time.perf_counter_ns
    chain_of = registry.chain
    select = registry.select
    costs = [0] * calls
    chosen = None
    for i, (role, params) in enumerate(inputs):
        t0 = clock()
        selection = select(chain_of(role))
        route = selection.route
        if route is not None:
            chosen = route.parameters if params is None else params.over(route.parameters)
        costs[i] = clock() - t0
    if chosen is None:
        raise RuntimeError("selection never found a route")
    # A batch of untimed calls gives the mean without the timer in it.
    t0 = clock()
    for role, params in inputs:
        route = select(chain_of(role)).route
        if route is not None and params is not None:
            params.over(route.parameters)
    mean = (clock() - t0) / calls
    costs.sort()
    return {
        "p50": float(percentile(costs, 50)),
        "p99": float(percentile(costs, 99)),
        "mean (untimed batch)": mean,
        "timer overhead": _timer_overhead(10_000),
    }


def run(settings: Settings) -> Sequence[Metric]:
    calls = 1_000_000 if settings.full else 200_000
    samples = collect(lambda: measure(calls), settings.repetitions)
    note = f"{calls:,} calls per repetition"
    return [
        Metric(name="p50", unit="ns", samples=samples["p50"], note=note),
        Metric(
            name="p99",
            unit="ns",
            samples=samples["p99"],
            target=Target(op="<=", value=10_000_000, text="well under 10 ms (aim: µs)"),
            note="includes the timer's own cost",
        ),
        Metric(name="mean (untimed batch)", unit="ns", samples=samples["mean (untimed batch)"]),
        Metric(name="timer overhead", unit="ns", samples=samples["timer overhead"]),
    ]


CASE = Case(name="selection", title="role -> chain -> route with merged parameters", run=run)
