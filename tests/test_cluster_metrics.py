"""Metric events in PostgreSQL: the same summaries and exports as the SQLite store.

Each case writes one random set of events both to SQLite and, in batches
from two concurrent writers, to PostgreSQL, then compares every summary
(every grouping, with and without provider and time filters, including
windows whose edges cut through runs) and the export.  Asyncio only.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from runner._errors import StorageError
from runner.cluster._metrics import PgEventStore, count_events, export, summarize
from runner.cluster._pool import open_database
from runner.cluster._schema import migrate
from runner.metrics._events import MetricEvent, to_row, ts_to_us
from runner.metrics._query import Filters, Grouping, export_db, summarize_db
from runner.metrics._runs import Compaction
from runner.metrics._sqlite import migrate_schema, store_rows
from tests.pg_support import pg_url

__all__ = ["pg_url"]

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
TAGS = ("nightly", "node:plan", "node:review", "team-a")


def _events(n: int, seed: int) -> list[MetricEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        success = rng.random() < 0.8
        out.append(
            MetricEvent(
                event_id=f"e{seed}-{i}",
                task_id=f"t{i}",
                provider=rng.choice(("p1", "p2", "p3")),
                role=rng.choice(("coder", "reviewer")),
                model="m",
                attempt=1,
                ts_us=ts_to_us(BASE + timedelta(microseconds=rng.randrange(0, 3_600_000_000))),
                latency_ms=rng.randrange(0, 5_000_000) / 1000,
                success=success,
                error_code=None if success else rng.choice((None, "", "rate_limited", "timeout")),
                input_tokens=rng.randrange(0, 10_000),
                output_tokens=rng.randrange(0, 10_000),
                cost_usd=rng.randrange(0, 10**9) / 1e9,
                tags=tuple(rng.sample(TAGS, rng.randrange(0, 3))),
            )
        )
    return out


def _sqlite(path: Path, events: list[MetricEvent]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_schema(conn)
    store_rows(conn, [[to_row(e) for e in events]])
    return conn


FILTERS = [
    Filters(),
    Filters(provider="p2"),
    Filters(role="coder"),
    Filters(since=BASE + timedelta(minutes=10)),
    Filters(until=BASE + timedelta(minutes=50)),
    Filters(provider="p1", since=BASE + timedelta(minutes=7), until=BASE + timedelta(minutes=8)),
    Filters(since=BASE + timedelta(hours=2)),
    Filters(tags=("nightly",)),
    Filters(tags=("nightly", "team-a"), role="coder", since=BASE + timedelta(minutes=10)),
    Filters(tags=("absent",)),
]
GROUPINGS = [
    Grouping(),
    Grouping(provider=False),
    Grouping(role=False),
    Grouping(provider=False, role=False, tag=True),
    Grouping(provider=True, role=True, tag=True),
]


async def test_summaries_and_export_equal_sqlite(pg_url: str, tmp_path: Path) -> None:
    """Every figure of every summary, and the export, match SQLite for the same events."""
    events = _events(1500, seed=1)
    # Repeats of a batch are skipped by event id, as on SQLite.
    batches = [events[i : i + 37] for i in range(0, len(events), 37)] + [events[:50]]
    async with open_database(pg_url, max_size=4) as db:
        await migrate(db)
        # Small runs so that compaction merges while two writers take turns.
        store_a = PgEventStore(db, compaction=Compaction(small=64, count=3))
        store_b = PgEventStore(db, compaction=Compaction(small=64, count=3))

        async def write(store: PgEventStore, part: list[list[MetricEvent]]) -> None:
            for batch in part:
                await store.write(batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, store_a, batches[0::2])
            tg.start_soon(write, store_b, batches[1::2])
        conn = _sqlite(tmp_path / "m.db", events)
        try:
            assert await count_events(db) == len(events)
            for filters in FILTERS:
                for grouping in GROUPINGS:
                    want = summarize_db(conn, filters, grouping)
                    assert await summarize(db, filters, grouping) == want, (filters, grouping)
            window = Filters(since=BASE + timedelta(minutes=5), until=BASE + timedelta(minutes=9))
            got = [e async for e in export(db, window, chunk=100)]
            assert got == list(export_db(conn, window))
            tagged = Filters(tags=("node:plan",), until=BASE + timedelta(minutes=30))
            got = [e async for e in export(db, tagged, chunk=100)]
            assert got == list(export_db(conn, tagged))
            assert got == sorted(
                (e for e in events if tagged.matches(e)), key=lambda e: (e.ts_us, e.event_id)
            )
        finally:
            conn.close()


async def test_empty_database_summarises_to_nothing(pg_url: str) -> None:
    """No events: an empty summary and a count of zero."""
    async with open_database(pg_url) as db:
        await migrate(db)
        assert await count_events(db) == 0
        assert await summarize(db, Filters(), Grouping()) == []


async def test_write_failure_is_a_storage_error_the_writer_spills(pg_url: str) -> None:
    """A batch that cannot be written raises StorageError, which the writer retries and spills."""
    async with open_database(pg_url) as db:
        await migrate(db)
        await db.execute("DROP TABLE runner_runs")
        with pytest.raises(StorageError, match="UndefinedTableError"):
            await PgEventStore(db).write(_events(3, seed=2))
        assert await count_events(db) == 0
