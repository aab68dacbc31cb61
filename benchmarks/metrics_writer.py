"""The metrics writer: events per second it sustains into SQLite.

One producer sends pre-built events through ``open_metrics_writer``'s sink as
fast as the writer lets it (the sink waits when the writer falls behind, so
the producer runs at exactly the writer's pace).  The clock runs from the
first ``send`` to the writer closed, so the final flush counts.  Each
repetition writes to a fresh database.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from benchmarks._fixtures import metric_events
from benchmarks._harness import Case, Metric, Settings, Target, collect
from runner.config import MetricsConfig
from runner.metrics import MetricEvent, open_metrics_writer
from runner.metrics._sqlite import open_for_reading


def print_notice(level: str, message: str) -> None:
    print(f"{level}: {message}", file=sys.stderr)


async def write_all(path: Path, events: Sequence[MetricEvent]) -> float:
    """Send every event and close the writer; wall seconds from first send to closed."""
    config = MetricsConfig(store="sqlite", path=str(path))
    async with open_metrics_writer(config, notify=print_notice) as sink:
        started = time.perf_counter()
        send = sink.send
        for event in events:
            await send(event)
    return time.perf_counter() - started


def stored(path: Path) -> int:
    conn = open_for_reading(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    return int(count)


def run(settings: Settings) -> Sequence[Metric]:
    count = 1_000_000 if settings.full else 200_000
    events = list(metric_events(count))
    runs = 0

    def once() -> dict[str, float]:
        nonlocal runs
        runs += 1
        path = Path(settings.scratch, f"writer-{runs}.db")
        seconds = anyio.run(write_all, path, events, backend="asyncio")
        if (found := stored(path)) != count:
            raise RuntimeError(f"the writer stored {found} of {count} events")
        path.unlink()
        return {"events/s": count / seconds}

    samples = collect(once, settings.repetitions)
    return [
        Metric(
            name="events/s sustained",
            unit="/s",
            samples=samples["events/s"],
            target=Target(op=">=", value=100_000, text="sustains 100,000 events/s"),
            note=f"{count:,} events per repetition, SQLite, flush included",
        )
    ]


CASE = Case(name="metrics_writer", title="SQLite metrics writer throughput", run=run)
