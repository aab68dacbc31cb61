"""The metrics stores: schema versions, JSONL reading, idempotent import.

Asyncio only where the aiosqlite writer is involved.
"""

from __future__ import annotations

import io
import itertools
import sqlite3
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner._errors import UsageError
from runner.config._model import MetricsConfig
from runner.metrics._events import MetricEvent
from runner.metrics._store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Compaction,
    append_jsonl,
    from_row,
    import_jsonl,
    insert_rows,
    migrate_schema,
    open_for_reading,
    prepare_database,
    read_jsonl,
    schema_version,
    spill_path,
    to_merge,
    to_row,
    unpack_latencies,
)
from runner.metrics._writer import open_metrics_writer

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


def event(n: int, **kw: object) -> MetricEvent:
    fields: dict[str, object] = {
        "event_id": f"e{n}",
        "task_id": f"t{n}",
        "provider": "p1",
        "role": "coder",
        "model": "m",
        "attempt": 1,
        "ts": BASE + timedelta(milliseconds=n),
        "latency_ms": 812.4,
        "success": False,
        "error_code": "timeout",
        "input_tokens": 12,
        "output_tokens": 30,
        "cost_usd": 0.00048,
    }
    fields.update(kw)
    return MetricEvent(**fields)  # type: ignore[arg-type]


def test_a_new_database_has_the_current_schema_version(tmp_path: Path) -> None:
    """Preparing a database records its schema version; preparing again changes nothing."""
    db = tmp_path / "sub" / "m.db"
    prepare_database(db)
    prepare_database(db)
    conn = sqlite3.connect(db)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_database_from_a_newer_runner_is_refused(tmp_path: Path) -> None:
    """A schema version above ours is a UsageError, not a silent misread."""
    db = tmp_path / "m.db"
    prepare_database(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.close()
    with pytest.raises(UsageError, match="schema version 99 is newer"):
        open_for_reading(db)


def test_rows_keep_events_to_the_microsecond_and_nano_dollar() -> None:
    """An event survives the row form (times and latencies in µs, cost in nano-USD)."""
    e = event(7)
    assert from_row(to_row(e)) == e


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """A crash mid-line loses only that line, and says so."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [event(0), event(1)])
    with path.open("ab") as f:
        f.write(b'{"event_id": "e2", "task')
    err = io.StringIO()
    assert list(read_jsonl(path, stderr=err)) == [event(0), event(1)]
    assert f"warning: {path}:3: skipped a torn last line" in err.getvalue()


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    """A complete invalid line is a UsageError with its line number."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [event(0)])
    with path.open("ab") as f:
        f.write(b'{"nope": 1}\n')
    append_jsonl(path, [event(2)])
    with pytest.raises(UsageError, match=rf"{path.name}:2: not a metric event"):
        list(read_jsonl(path))


def test_importing_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    """The second import of a JSONL file reads every event and adds none."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(25)])
    db = tmp_path / "m.db"
    assert import_jsonl(db, source) == (25, 25)
    assert import_jsonl(db, source) == (25, 0)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (25,)
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (25,)
    assert conn.execute("SELECT sum(requests) FROM rollup").fetchone() == (25,)
    conn.close()


@pytest.mark.anyio
async def test_a_database_failing_mid_run_spills_every_event(tmp_path: Path) -> None:
    """Inserts that fail (as on a full disk) are rolled back, retried, then spilled: none lost."""
    db = tmp_path / "m.db"
    prepare_database(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    conn.commit()
    conn.close()
    err = io.StringIO()
    async with open_metrics_writer(MetricsConfig(path=str(db)), stderr=err) as sink:
        for n in range(40):
            await sink.send(event(n))
    assert list(read_jsonl(spill_path(db))) == [event(n) for n in range(40)]
    assert f"cannot write to {db} (disk full)" in err.getvalue()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    conn.close()


def trickle(conn: sqlite3.Connection, count: int, compaction: Compaction) -> list[MetricEvent]:
    """Write ``count`` events over four series in batches of 1, 2, 3, 1, 2, 3, ... events."""
    events = [
        event(n, provider=f"p{n % 2}", role=("coder", "reviewer")[n // 2 % 2], latency_ms=n % 97)
        for n in range(count)
    ]
    start = 0
    for size in itertools.cycle((1, 2, 3)):
        if start >= count:
            break
        insert_rows(conn, [to_row(e) for e in events[start : start + size]], compaction=compaction)
        start += size
    return events


def test_runs_stay_few_when_events_trickle_in() -> None:
    """Batches of 1-3 events leave about events/small runs per series, not one per batch."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    compaction = Compaction(small=64, count=4)
    trickle(conn, 5_000, compaction)
    per_series = conn.execute("SELECT count(*) FROM runs GROUP BY provider, role").fetchall()
    # 1,250 events a series: at most 1250 / 64 full runs and count - 1 small ones at the end.
    assert len(per_series) == 4
    assert all(n <= 1_250 // 64 + 3 for (n,) in per_series)
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (5_000,)


def test_compacted_runs_hold_exactly_the_events_of_their_id_range() -> None:
    """Each merged run's counts, times and packed latencies are those of its series' id range."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    trickle(conn, 600, Compaction(small=16, count=3))
    runs = conn.execute(
        "SELECT provider, role, first_id, last_id, min_ts_us, max_ts_us, requests, latencies"
        " FROM runs"
    ).fetchall()
    assert max(r[6] for r in runs) > 16  # merges happened
    for provider, role, first, last, lo, hi, n, blob in runs:
        rows = conn.execute(
            "SELECT ts_us, latency_us FROM events WHERE id BETWEEN ? AND ?"
            " AND provider = ? AND role = ?",
            (first, last, provider, role),
        ).fetchall()
        latencies: array[int] = array("q")
        unpack_latencies(blob, latencies)
        assert len(rows) == n
        assert (min(ts for ts, _ in rows), max(ts for ts, _ in rows)) == (lo, hi)
        assert list(latencies) == sorted(lat for _, lat in rows)


def test_without_compaction_every_batch_keeps_its_run() -> None:
    """compaction=None leaves one run per batch and series, as written."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    for n in range(10):
        insert_rows(conn, [to_row(event(n))], compaction=None)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (10,)


def test_to_merge_needs_count_small_runs_at_the_end() -> None:
    """Only when the newest `count` runs are all small are they merged, oldest id first."""
    c = Compaction(small=10, count=3)
    assert to_merge([(9, 1), (8, 2), (7, 9), (6, 500)], c) == [7, 8, 9]
    assert to_merge([(9, 1), (8, 10), (7, 9)], c) == []
    assert to_merge([(9, 1), (8, 2)], c) == []


def test_a_version_1_database_gains_the_runs_index_and_keeps_its_events(tmp_path: Path) -> None:
    """Opening a database written before compaction adds version 2 and loses nothing."""
    db = tmp_path / "m.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    insert_rows(conn, [to_row(event(n)) for n in range(5)], compaction=None)
    conn.close()
    conn = open_for_reading(db)
    assert schema_version(conn) == 2
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("runs_series",) in indexes
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (5,)
    conn.close()
