"""``metrics summary`` after events trickled in, one to three per write batch.

A long-running worker on slow providers writes tiny batches, and every batch
adds a run per (provider, role) to the ``runs`` table.  This case fills one
database the way such a worker would, through the store's own
``store_rows`` with batches of 1-3 events (the async writer does the same
per transaction but is too slow to generate a million tiny batches), once
with compaction (what runner does) and once without (what it did before),
then times ``python -m runner metrics summary`` on each, start-up included.

It also sends some events through ``open_metrics_writer`` with batches of
at most two events, to confirm the writer compacts too.  Every answer is
checked: the request counts must add up to the number of events.

Run it on its own with ``python -m benchmarks.metrics_trickle [--full]``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from benchmarks._fixtures import metric_events
from benchmarks._harness import Case, Metric, Settings, Target, collect, print_table, run_cases
from benchmarks.metrics_summary import SPAN_S, summary_seconds
from runner.config import MetricsConfig
from runner.metrics import open_metrics_writer
from runner.metrics._events import to_row as row_of
from runner.metrics._runs import DEFAULT_COMPACTION, Compaction
from runner.metrics._sqlite import prepare_database, store_rows

TARGET = Target(op="<=", value=2.0, text="1,000,000 trickled events well under 2 s (aim 0.25 s)")
#: Events sent through the async writer to check that it compacts.
WRITER_EVENTS = 20_000


def fill(path: Path, count: int, compaction: Compaction | None) -> int:
    """Write ``count`` events in batches of 1-3; return how many runs the database holds."""
    prepare_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    # What the writer uses: durable in WAL mode without an fsync per commit.
    conn.execute("PRAGMA synchronous=NORMAL")
    rng = random.Random(7)
    try:
        events = metric_events(count, span_s=SPAN_S)
        while rows := [row_of(e) for e in itertools.islice(events, rng.randint(1, 3))]:
            store_rows(conn, [rows], compaction=compaction)
        (runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    finally:
        conn.close()
    return int(runs)


def print_notice(level: str, message: str) -> None:
    print(f"{level}: {message}", file=sys.stderr)


async def send_trickle(path: Path, count: int) -> None:
    """Send events through the writer with batches of at most two events."""
    config = MetricsConfig(store="sqlite", path=str(path))
    async with open_metrics_writer(config, notify=print_notice, batch_size=2) as sink:
        for event in metric_events(count):
            await sink.send(event)
            # Let the writer take this one before the next arrives, as on a slow provider.
            await anyio.lowlevel.checkpoint()


def writer_runs(path: Path, count: int) -> tuple[int, int]:
    """Trickle ``count`` events through the writer; return (transactions, runs) it left."""
    anyio.run(send_trickle, path, count, backend="asyncio")
    conn = sqlite3.connect(path)
    try:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        (runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    finally:
        conn.close()
    if events != count:
        raise RuntimeError(f"the writer stored {events} of {count} events")
    return int(events), int(runs)


def run(settings: Settings) -> Sequence[Metric]:
    count = 1_000_000 if settings.full else 200_000
    metrics: list[Metric] = []
    for label, compaction in (("compacted", DEFAULT_COMPACTION), ("not compacted", None)):
        db = Path(settings.scratch, f"trickle-{count}-{'c' if compaction else 'n'}.db")
        db.unlink(missing_ok=True)
        started = time.perf_counter()
        runs = fill(db, count, compaction)
        built = time.perf_counter() - started
        samples = collect(
            lambda db=db: {"s": summary_seconds(db, count, [])},  # type: ignore[misc]
            settings.repetitions,
        )
        metrics.append(
            Metric(
                name=f"{count:,} trickled events, {label}",
                unit="s",
                samples=samples["s"],
                target=TARGET if compaction is not None and count == 1_000_000 else None,
                note=f"{runs:,} runs; built in {built:.0f} s ({count / built:,.0f} events/s)",
            )
        )
        db.unlink()
    db = Path(settings.scratch, "trickle-writer.db")
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    events, runs = writer_runs(db, WRITER_EVENTS)
    seconds = time.perf_counter() - started
    db.unlink()
    metrics.append(
        Metric(
            name=f"runs after {events:,} events through the writer, batches of 1-2",
            unit="runs",
            samples=[float(runs)],
            note=f"{events / seconds:,.0f} events/s one or two per transaction",
        )
    )
    return metrics


CASE = Case(name="metrics_trickle", title="metrics summary after trickled writes", run=run)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_trickle")
    parser.add_argument("--full", action="store_true", help="1,000,000 events (else 200,000)")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(full=args.full, repetitions=args.repetitions, scratch=scratch)
        print_table(run_cases([CASE], settings))


if __name__ == "__main__":
    main()
