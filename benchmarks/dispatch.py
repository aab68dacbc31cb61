"""Dispatch overhead: tasks through ``run_many`` on a zero-latency simulated provider.

With no provider latency every microsecond is runner's own: queueing, the
state machine, selection, the attempt, the result and (with the SQLite
writer on) one metric event per task.  Measured with the SQLite metrics
writer and with ``store: none`` (what the metrics cost), both with the
execution log at ``warning``, and once more with the default ``info`` log (a
line per task) sent to ``/dev/null`` (what that log costs).  The clock covers
opening the runner, every task, and the final metrics flush.
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

#: (label, metrics store, log level): the variants measured, in order.
VARIANTS: tuple[tuple[str, Store, LogLevel], ...] = (
    ("store sqlite", "sqlite", "warning"),
    ("store none", "none", "warning"),
    ("store sqlite, info log", "sqlite", "info"),
)


def run(settings: Settings) -> Sequence[Metric]:
    require_runner()
    count = 50_000 if settings.full else 10_000
    metrics: list[Metric] = []
    runs = 0
    for label, store, level in VARIANTS:

        def once(store: Store = store, level: LogLevel = level) -> dict[str, float]:
            nonlocal runs
            runs += 1
            db = Path(settings.scratch, f"dispatch-{runs}.db")
            config = sim_config(concurrency=CONCURRENCY, store=store, db_path=db, log_level=level)
            with open(os.devnull, "w") as devnull:
                timed = partial(run_timed, log_stream=devnull)
                seconds = anyio.run(timed, config, count, backend="asyncio")
            return {"tasks/s": count / seconds, "µs/task": seconds / count * 1e6}

        samples = collect(once, settings.repetitions)
        note = f"{count:,} tasks, concurrency {CONCURRENCY}"
        if level == "info":
            note = "a log line per task, to /dev/null"
        metrics.append(
            Metric(name=f"µs/task, {label}", unit="µs", samples=samples["µs/task"], note=note)
        )
        metrics.append(Metric(name=f"tasks/s, {label}", unit="/s", samples=samples["tasks/s"]))
    return metrics


CASE = Case(name="dispatch", title="run_many overhead, zero-latency provider", run=run)
