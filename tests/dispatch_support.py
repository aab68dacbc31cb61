"""Helpers for the dispatcher, workflow and API tests: fake time, configs, providers."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel

from runner import Runner
from runner.config import (
    Config,
    CooldownConfig,
    LoggingConfig,
    Pricing,
    ProviderConfig,
    RetryConfig,
    RoleConfig,
)
from runner.metrics import MemorySink
from workers import CompletionRequest, CompletionResponse, Provider
from workers.simulated import Fault, Script, SimulatedProvider, Success


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; every wait is recorded."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()


def sim(pid: str, **kw: Any) -> ProviderConfig:
    return ProviderConfig(id=pid, type="simulated", model=f"model-{pid}", **kw)


def make_config(**kw: Any) -> Config:
    """Providers a, b, c, d; coder a->b->c(->d), reviewer b->d, planner d, clarifier c."""
    base: dict[str, Any] = {
        "providers": (
            sim("a", pricing=Pricing(input_per_million=1.0, output_per_million=2.0)),
            sim("b"),
            sim("c"),
            sim("d"),
        ),
        "roles": {
            "coder": RoleConfig(provider="a", fallbacks=("b", "c")),
            "reviewer": RoleConfig(provider="b", fallbacks=("d",)),
            "planner": RoleConfig(provider="d"),
            "clarifier": RoleConfig(provider="c"),
        },
        "default_provider": "d",
        "concurrency": 8,
        "retry": RetryConfig(
            max_attempts=3, initial_delay=0.5, max_delay=30, jitter=0, max_retry_after=60
        ),
        "cooldown": CooldownConfig(failures=100, seconds=30),
        "logging": LoggingConfig(level="info", format="json"),
        "grace_period": 5.0,
    }
    base.update(kw)
    return Config(**base)


class Scripts:
    """Per-provider scripts: a list of outcomes per task id, consumed one per attempt."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, str], list[Fault | Success]] = {}
        self.requests: list[tuple[str, CompletionRequest]] = []

    def plan(self, provider: str, task_id: str, *outcomes: Fault | Success) -> None:
        self.plans[(provider, task_id)] = list(outcomes)

    def script_for(self, provider: str) -> Script:
        def script(request: CompletionRequest) -> Fault | Success | None:
            self.requests.append((provider, request))
            queue = self.plans.get((provider, request.task_id))
            return queue.pop(0) if queue else None

        return script


def simulated(
    config: Config, scripts: Scripts | None = None, sleep: Callable[[float], Any] | None = None
) -> dict[str, Provider]:
    out: dict[str, Provider] = {}
    for pc in config.providers:
        kw: dict[str, Any] = {}
        if scripts is not None:
            kw["script"] = scripts.script_for(pc.id)
        if sleep is not None:
            kw["sleep"] = sleep
        out[pc.id] = SimulatedProvider(pc, **kw)
    return out


class Gate:
    """A provider wrapper that counts in-flight calls and can hold them until released."""

    def __init__(self, inner: Provider, counts: Counter[str], peaks: Counter[str]) -> None:
        self._inner = inner
        self._counts = counts
        self._peaks = peaks
        self.hold: anyio.Event | None = None
        self.started = 0

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def type(self) -> str:
        return self._inner.type

    @property
    def model(self) -> str:
        return self._inner.model

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        pid = self._inner.id
        self._counts[pid] += 1
        self._counts["*"] += 1
        self._peaks[pid] = max(self._peaks[pid], self._counts[pid])
        self._peaks["*"] = max(self._peaks["*"], self._counts["*"])
        self.started += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            return await self._inner.complete(request)
        finally:
            self._counts[pid] -= 1
            self._counts["*"] -= 1

    async def check_credentials(self) -> None:
        await self._inner.check_credentials()

    async def aclose(self) -> None:
        await self._inner.aclose()


def open_runner(
    config: Config,
    *,
    providers: Mapping[str, Provider] | None = None,
    time: FakeTime | None = None,
    sink: MemorySink | None = None,
    log: io.StringIO | None = None,
    **kw: Any,
) -> Runner:
    t = time if time is not None else FakeTime()
    kw.setdefault("sleep", t.sleep)
    return Runner.from_config(
        config,
        metrics=sink if sink is not None else MemorySink(),
        providers=providers if providers is not None else simulated(config, sleep=t.sleep),
        clock=t.clock,
        log_stream=log if log is not None else io.StringIO(),
        **kw,
    )


def log_lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines() if line.strip()]
