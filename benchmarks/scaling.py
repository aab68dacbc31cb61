"""Concurrency scaling: many tasks in flight on simulated 100 ms providers.

For each in-flight count N (10, 100, 1,000, 5,000; concurrency and the
provider's own limit both N) two runs:

* **one wave**: N tasks at once; the ideal is one provider latency, 100 ms.
  This is the target read literally ("1,000 concurrent tasks
  finish within 1.15x of the ideal").
* **sustained**: ``WAVES`` x N tasks, N in flight all along; the ideal is
  ``WAVES`` x 100 ms.  This shows whether runner keeps N calls in flight
  when tasks keep coming, with start-up costs spread out.

The clock runs from handing over the first task to the last result (opening
and closing the runner are measured by the dispatch case).  Metrics go to
SQLite, as in a default run.  Efficiency is reported as wall / ideal, so 1.00
is perfect and lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from benchmarks._fixtures import require_runner, run_timed, sim_config
from benchmarks._harness import Case, Metric, Settings, Target, collect

LATENCY_MS = 100.0
IN_FLIGHT = (10, 100, 1_000, 5_000)
TARGET = Target(op="<=", value=1.15, text="1,000 concurrent tasks within 1.15x of ideal")


def run(settings: Settings) -> Sequence[Metric]:
    require_runner()
    waves = 10 if settings.full else 5
    metrics: list[Metric] = []
    runs = 0
    for n in IN_FLIGHT:

        def once(n: int = n) -> dict[str, float]:
            nonlocal runs
            out: dict[str, float] = {}
            for label, count in (("one wave", n), ("sustained", n * waves)):
                runs += 1
                config = sim_config(
                    latency_ms=LATENCY_MS,
                    concurrency=n,
                    db_path=Path(settings.scratch, f"scaling-{runs}.db"),
                )
                seconds = anyio.run(
                    partial(run_timed, include_open=False), config, count, backend="asyncio"
                )
                ideal = count / n * LATENCY_MS / 1000
                out[label] = seconds / ideal
            return out

        samples = collect(once, settings.repetitions)
        target = TARGET if n == 1_000 else None
        metrics.append(
            Metric(
                name=f"{n:,} in flight, one wave",
                unit="x ideal",
                samples=samples["one wave"],
                target=target,
                note=f"{n:,} tasks, ideal {LATENCY_MS / 1000:.1f} s",
            )
        )
        metrics.append(
            Metric(
                name=f"{n:,} in flight, sustained",
                unit="x ideal",
                samples=samples["sustained"],
                target=target,
                note=f"{n * waves:,} tasks, ideal {waves * LATENCY_MS / 1000:.1f} s",
            )
        )
    return metrics


CASE = Case(name="scaling", title="wall time vs ideal on 100 ms providers", run=run)
