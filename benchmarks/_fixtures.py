"""What several cases share: simulated configs and a timed ``run_many`` pass.

Everything goes through runner's public Python API (``Runner.from_config``
and ``run_many``), exactly as a user would drive it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TextIO

from benchmarks._harness import Skip
from runner import Task
from runner.config import (
    Config,
    LatencySpec,
    LoggingConfig,
    MetricsConfig,
    ProviderConfig,
    RoleConfig,
)
from runner.metrics import MetricEvent

Store = Literal["sqlite", "none"]
LogLevel = Literal["debug", "info", "warning", "error"]


def sim_config(
    *,
    providers: int = 3,
    latency_ms: float = 0.0,
    concurrency: int = 64,
    per_provider: int | None = None,
    store: Store = "sqlite",
    db_path: str | Path = "",
    log_level: LogLevel = "warning",
) -> Config:
    """A ``coder`` role over ``providers`` simulated providers (primary, then fallbacks).

    ``latency_ms`` 0 puts the simulated provider on its fast path (no
    randomness, no sleep), so what is measured is runner's own overhead.
    Each provider admits ``per_provider`` calls at once (default: all of
    ``concurrency``), so the global limit is the one that binds.  The
    execution log is at ``warning`` unless asked otherwise: a line per task
    on a terminal measures the terminal, not runner.
    """
    if store == "sqlite" and not db_path:
        raise ValueError("the sqlite store needs a db_path")
    ids = [f"sim-{i}" for i in range(providers)]
    return Config(
        providers=tuple(
            ProviderConfig(
                id=pid,
                type="simulated",
                model=f"sim-model-{i}",
                latency_ms=LatencySpec(mean=latency_ms, jitter=0.0),
                max_concurrency=per_provider or concurrency,
            )
            for i, pid in enumerate(ids)
        ),
        roles={"coder": RoleConfig(provider=ids[0], fallbacks=tuple(ids[1:]))},
        default_provider=ids[-1],
        concurrency=concurrency,
        metrics=MetricsConfig(store=store, path=str(db_path) if db_path else ".runner/none.db"),
        logging=LoggingConfig(level=log_level, format="json"),
    )


def tasks(count: int, *, prefix: str = "t") -> Iterator[Task]:
    """``count`` small coder tasks, generated lazily as ``run_many`` pulls them."""
    for i in range(count):
        yield Task(id=f"{prefix}-{i}", role="coder", prompt=f"Write function number {i}.")


def require_runner() -> None:
    """Skip the case, saying why, when the Python API is not importable."""
    try:
        import runner._api  # noqa: F401
    except ImportError as exc:
        raise Skip(f"runner's Python API (runner._api) is not available: {exc}") from exc


async def run_timed(
    config: Config,
    count: int,
    *,
    prefix: str = "t",
    include_open: bool = True,
    log_stream: TextIO | None = None,
) -> float:
    """Open a runner, push ``count`` tasks through ``run_many``, close it; wall seconds.

    With ``include_open`` the clock covers the whole ``async with`` block, so
    opening the metrics writer and the final flush of every event count
    against runner; without it, only the time from the first task handed
    over to the last result.  Raises if any task does not complete: a fast
    wrong answer is not a result.  ``log_stream`` receives the execution
    log instead of stderr.
    """
    from runner._api import Runner

    opened = time.perf_counter()
    completed = 0
    statuses: dict[str, int] = {}
    async with Runner.from_config(config, log_stream=log_stream) as runner:
        started = time.perf_counter()
        async for result in runner.run_many(tasks(count, prefix=prefix)):
            if result.status == "completed":
                completed += 1
            else:
                statuses[result.status] = statuses.get(result.status, 0) + 1
        finished = time.perf_counter()
    elapsed = time.perf_counter() - opened if include_open else finished - started
    if completed != count:
        raise RuntimeError(f"{completed} of {count} tasks completed; others: {statuses}")
    return elapsed


PROVIDERS = ("openai-gpt4o", "claude-sonnet", "gemini-flash", "sim-a", "sim-b", "sim-c")
ROLES = ("coder", "reviewer", "planner", "clarifier")
ERRORS = ("rate_limited", "server_error", "timeout", "overloaded")


def metric_events(count: int, *, span_s: float = 86_400.0) -> Iterator[MetricEvent]:
    """``count`` varied, realistic events over the ``span_s`` seconds before now, lazily.

    Six providers by four roles, about 5 % failures over four codes, spread
    (log-normal) latencies and token counts.  Event ids follow the
    dispatcher's form (a random prefix, then a hex sequence number), since
    their order decides where they land in the unique index.
    """
    rng = random.Random(count)
    prefix = uuid.uuid4().hex[:16]
    end_us = time.time_ns() // 1000
    step = span_s / max(count, 1)
    for i in range(count):
        ok = rng.random() >= 0.05
        tokens_in = rng.randint(10, 2_000)
        tokens_out = rng.randint(1, 1_000) if ok else 0
        yield MetricEvent(
            event_id=f"{prefix}{i + 1:x}",
            task_id=f"t-{i // 2}",
            provider=PROVIDERS[i % len(PROVIDERS)],
            role=ROLES[(i // len(PROVIDERS)) % len(ROLES)],
            model="bench-model",
            attempt=1 + i % 2,
            ts_us=end_us - round((span_s - i * step) * 1_000_000),
            latency_ms=round(rng.lognormvariate(6.0, 0.6), 3),
            success=ok,
            error_code=None if ok else ERRORS[i % len(ERRORS)],
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=(tokens_in * 2.5 + tokens_out * 10.0) / 1e6,
        )
