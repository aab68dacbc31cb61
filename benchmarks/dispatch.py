"""Dispatch overhead: tasks through ``run_many`` on a zero-latency simulated provider.

With no provider latency every microsecond is runner's own: queueing, the
state machine, selection, the attempt, the result and (with the SQLite
writer on) one metric event per task.  Measured with the SQLite metrics
writer and with ``store: none`` (what the metrics cost), both with the
execution log at ``warning``, and once more with the default ``info`` log (a
line per task) sent to ``/dev/null`` (what that log costs).  A last variant
gives each provider ``max_concurrency`` 16 (the field's default) under
``concurrency`` 64, as the bundled config does, so the per-provider
capacity limiter is active and binds: what admitting every attempt through
it costs.  The clock covers opening the runner, every task, and the final
metrics flush.  Each repetition runs every variant once (forwards, then
backwards the next time), so the info log's cost, the difference of two
variants, comes from figures taken seconds apart on a machine whose load
moves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from benchmarks._fixtures import LogLevel, Store, require_runner, run_timed, sim_config
from benchmarks._harness import Case, Metric, Settings, Target, collect

CONCURRENCY = 64

#: What the info log costs a task: its variant less the same at warning, per repetition.
INFO_COST = "info log cost µs/task"

#: A provider's own limit below CONCURRENCY: the limiter exists and binds.
PROVIDER_LIMIT = 16

#: (label, metrics store, log level, per-provider limit or None for CONCURRENCY).
VARIANTS: tuple[tuple[str, Store, LogLevel, int | None], ...] = (
    ("store sqlite", "sqlite", "warning", None),
    ("store none", "none", "warning", None),
    ("store sqlite, info log", "sqlite", "info", None),
    (f"store sqlite, provider limit {PROVIDER_LIMIT}", "sqlite", "warning", PROVIDER_LIMIT),
)


def run(settings: Settings) -> Sequence[Metric]:
    require_runner()
    count = 50_000 if settings.full else 10_000
    runs = 0

    def one(store: Store, level: LogLevel, limit: int | None) -> tuple[float, float]:
        nonlocal runs
        runs += 1
        db = Path(settings.scratch, f"dispatch-{runs}.db")
        config = sim_config(
            concurrency=CONCURRENCY, per_provider=limit, store=store, db_path=db, log_level=level
        )
        with open(os.devnull, "w") as devnull:
            timed = partial(run_timed, log_stream=devnull)
            seconds = anyio.run(timed, config, count, backend="asyncio")
        return count / seconds, seconds / count * 1e6

    rounds = 0

    def once() -> dict[str, float]:
        # Every variant once per repetition, forwards then backwards, so that
        # the variants are compared at the same moment (the load moves).
        nonlocal rounds
        rounds += 1
        order = VARIANTS if rounds % 2 else tuple(reversed(VARIANTS))
        out: dict[str, float] = {}
        for label, store, level, limit in order:
            out[f"tasks/s, {label}"], out[f"µs/task, {label}"] = one(store, level, limit)
        out[INFO_COST] = out["µs/task, store sqlite, info log"] - out["µs/task, store sqlite"]
        return out

    samples = collect(once, settings.repetitions)
    metrics: list[Metric] = []
    for label, _, level, limit in VARIANTS:
        note = f"{count:,} tasks, concurrency {CONCURRENCY}"
        if level == "info":
            note = "a log line per task, to /dev/null"
        elif limit is not None:
            note = f"each provider max_concurrency {limit} < concurrency {CONCURRENCY}"
        name = f"µs/task, {label}"
        metrics.append(Metric(name=name, unit="µs", samples=samples[name], note=note))
        name = f"tasks/s, {label}"
        metrics.append(Metric(name=name, unit="/s", samples=samples[name]))
    metrics.append(
        Metric(
            name=INFO_COST,
            unit="µs",
            samples=samples[INFO_COST],
            target=Target(op="<=", value=10, text="info-level logging at most +10 µs a task"),
            note="info log less warning, sqlite metrics, per repetition (variants interleaved)",
        )
    )
    return metrics


CASE = Case(name="dispatch", title="run_many overhead, zero-latency provider", run=run)
