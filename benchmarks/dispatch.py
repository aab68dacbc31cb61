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
metrics flush.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from benchmarks._fixtures import LogLevel, Store, require_runner, run_timed, sim_config
from benchmarks._harness import Case, Metric, Settings, collect

CONCURRENCY = 64

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
    metrics: list[Metric] = []
    runs = 0
    for label, store, level, limit in VARIANTS:

        def once(
            store: Store = store, level: LogLevel = level, limit: int | None = limit
        ) -> dict[str, float]:
            nonlocal runs
            runs += 1
            db = Path(settings.scratch, f"dispatch-{runs}.db")
            config = sim_config(
                concurrency=CONCURRENCY,
                per_provider=limit,
                store=store,
                db_path=db,
                log_level=level,
            )
            with open(os.devnull, "w") as devnull:
                timed = partial(run_timed, log_stream=devnull)
                seconds = anyio.run(timed, config, count, backend="asyncio")
            return {"tasks/s": count / seconds, "µs/task": seconds / count * 1e6}

        samples = collect(once, settings.repetitions)
        note = f"{count:,} tasks, concurrency {CONCURRENCY}"
        if level == "info":
            note = "a log line per task, to /dev/null"
        elif limit is not None:
            note = f"each provider max_concurrency {limit} < concurrency {CONCURRENCY}"
        metrics.append(
            Metric(name=f"µs/task, {label}", unit="µs", samples=samples["µs/task"], note=note)
        )
        metrics.append(Metric(name=f"tasks/s, {label}", unit="/s", samples=samples["tasks/s"]))
    return metrics


CASE = Case(name="dispatch", title="run_many overhead, zero-latency provider", run=run)
