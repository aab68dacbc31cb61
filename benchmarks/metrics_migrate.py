"""``metrics migrate``: importing a JSONL store of 1,000,000 events.

The JSONL file is written once through the store's own encoder (the line
format a spill file or ``metrics.store: jsonl`` leaves), then the command a
user types is timed as a subprocess, start-up included:

* ``python -m runner metrics migrate FILE --db NEW.db``: into a database that
  does not exist yet (the target of record: 1,000,000 events within 5 s);
* the same command again on the database it just filled: every event is
  already there, so this is the idempotent re-import.

Every answer is checked: the first import must add every event, the second
none, and the database must hold exactly ``count`` events.

Quick mode imports the same 1,000,000 events (the target's size) but
repeats at most 3 times, with no warm-up (writing the file warms the page
cache): about 40 s on an idle two-core machine, against 75 s with
``--full``'s 9 repetitions and a warm-up.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks._fixtures import metric_events
from benchmarks._harness import Case, Metric, Settings, Target, collect
from runner.metrics._jsonl import encode_lines

COUNT = 1_000_000
TARGET = Target(op="<=", value=5.0, text="1,000,000 JSONL events imported within 5 s")
#: Repetitions in quick mode, at most.
QUICK_REPETITIONS = 3
ROOT = Path(__file__).resolve().parent.parent
_IMPORTED = re.compile(rb"imported (\d+) new events")


def write_file(path: Path, count: int) -> None:
    """A JSONL store of ``count`` varied events, written in chunks."""
    events = metric_events(count)
    with path.open("wb") as f:
        while chunk := list(itertools.islice(events, 10_000)):
            f.write(encode_lines(chunk))


def migrate(source: Path, db: Path) -> tuple[float, int]:
    """Wall seconds of ``runner metrics migrate SOURCE --db DB`` and the events it added."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "metrics", "migrate", str(source), "--db", str(db)],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    found = _IMPORTED.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"migrate exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed, int(found[1])


def stored(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    return int(count)


def run(settings: Settings) -> Sequence[Metric]:
    count = COUNT
    source = Path(settings.scratch, "migrate.jsonl")
    write_file(source, count)
    runs = 0

    def once() -> dict[str, float]:
        nonlocal runs
        runs += 1
        db = Path(settings.scratch, f"migrate-{runs}.db")
        new, added = migrate(source, db)
        if added != count:
            raise RuntimeError(f"the first import added {added} of {count} events")
        again, added = migrate(source, db)
        if added != 0:
            raise RuntimeError(f"importing the same file again added {added} events")
        if (found := stored(db)) != count:
            raise RuntimeError(f"the database holds {found} of {count} events")
        for leftover in Path(settings.scratch).glob(f"migrate-{runs}.db*"):
            leftover.unlink()
        return {"new": new, "again": again}

    if settings.full:
        samples = collect(once, settings.repetitions)
    else:
        samples = collect(once, min(settings.repetitions, QUICK_REPETITIONS), warmup=0)
    source.unlink()
    return [
        Metric(
            name=f"{count:,} events into a new database",
            unit="s",
            samples=samples["new"],
            target=TARGET,
            note="whole command, start-up included",
        ),
        Metric(
            name=f"{count:,} events again (all already there)",
            unit="s",
            samples=samples["again"],
            note="the idempotent re-import",
        ),
    ]


CASE = Case(name="metrics_migrate", title="metrics migrate of a JSONL store", run=run)
