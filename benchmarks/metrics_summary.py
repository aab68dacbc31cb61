"""``metrics summary`` over 100,000 and 1,000,000 stored events.

The database is filled once per size through the store's own
``prepare_database``/``store_rows`` (the schema, indexes and rollup a real
run would leave), then the command a user types is timed as a subprocess,
start-up included:

* ``python -m runner metrics summary --db P --format json`` (every event);
* the same with ``--since 12h``: the events span the last 24 hours, so the
  filter keeps the newer half (what a time window costs on a big database).

The bare start-up (``python -m runner --help``) is measured too, so the
query's own share can be read off.  Every answer is checked: the request
counts must add up to the number of events (about half of them with
``--since 12h``).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from benchmarks._fixtures import metric_events
from benchmarks._harness import Case, Metric, Settings, Target, collect
from runner.metrics._events import to_row
from runner.metrics._sqlite import prepare_database, store_rows
from runner.metrics._writer import DEFAULT_BATCH

SIZES = (100_000, 1_000_000)
SPAN_S = 86_400.0
TARGET = Target(op="<=", value=2.0, text="1,000,000 events well under 2 s (aim 0.25 s)")
ROOT = Path(__file__).resolve().parent.parent


def fill(path: Path, count: int) -> None:
    """A metrics database holding ``count`` events, written in the batches a real run makes."""
    import sqlite3

    prepare_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        events = metric_events(count, span_s=SPAN_S)
        # The writer's batch size: each batch leaves one sorted run per series,
        # and runs a time window cuts through are re-read, so their size counts.
        while rows := [to_row(e) for e in itertools.islice(events, DEFAULT_BATCH)]:
            store_rows(conn, [rows])
    finally:
        conn.close()


def timed_command(args: Sequence[str]) -> tuple[float, bytes]:
    """Wall seconds of ``python -m runner ARGS`` and its stdout; raises if it fails."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"'runner {' '.join(args)}' exited {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    return elapsed, done.stdout


def summary_seconds(db: Path, count: int, extra: Sequence[str], *, share: float = 1.0) -> float:
    """Time one ``metrics summary``; check it counts ``share`` of the ``count`` events."""
    args = ["metrics", "summary", "--db", str(db), "--format", "json", *extra]
    seconds, out = timed_command(args)
    rows = msgspec.json.decode(out)
    total = sum(int(row["requests"]) for row in rows)
    # A window's edge moves with the clock, so a share is checked to within 1 %.
    if abs(total - count * share) > (0 if share == 1.0 else count / 100):
        raise RuntimeError(f"the summary counted {total} requests, not {count * share:.0f}")
    return seconds


def run(settings: Settings) -> Sequence[Metric]:
    startup = collect(lambda: {"s": timed_command(["--help"])[0]}, settings.repetitions)
    metrics = [
        Metric(
            name="start-up only (runner --help)",
            unit="s",
            samples=startup["s"],
            note="interpreter and CLI start-up, for reference",
        )
    ]
    for count in SIZES:
        db = Path(settings.scratch, f"summary-{count}.db")
        started = time.perf_counter()
        fill(db, count)
        built = time.perf_counter() - started

        def once(db: Path = db, count: int = count) -> dict[str, float]:
            return {
                "all": summary_seconds(db, count, []),
                "since": summary_seconds(db, count, ["--since", "12h"], share=0.5),
            }

        samples = collect(once, settings.repetitions)
        target = TARGET if count == 1_000_000 else None
        metrics.append(
            Metric(
                name=f"{count:,} events",
                unit="s",
                samples=samples["all"],
                target=target,
                note=f"whole command; database built in {built:.0f} s",
            )
        )
        metrics.append(
            Metric(
                name=f"{count:,} events, --since 12h",
                unit="s",
                samples=samples["since"],
                target=target,
                note="a time window holding half the events",
            )
        )
        db.unlink()
    return metrics


CASE = Case(name="metrics_summary", title="metrics summary over stored events", run=run)
