"""``metrics migrate``'s bulk path: many rows to a statement, the journal during a load."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner import UsageError
from runner.metrics._events import MetricEvent, Row, to_row, ts_to_us
from runner.metrics._jsonl import append_jsonl
from runner.metrics._sqlite import (
    INSERT_SIZES,
    WHOLE_BATCH,
    import_jsonl,
    migrate_schema,
    open_for_reading,
    prepare_database,
    store_rows,
)
from runner.metrics._writer import DEFAULT_BATCH

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


def row(n: int) -> Row:
    return to_row(
        MetricEvent(
            event_id=f"e{n}",
            task_id=f"t{n}",
            provider=f"p{n % 3}",
            role="coder",
            model="m",
            attempt=1,
            ts_us=ts_to_us(BASE + timedelta(milliseconds=n)),
            latency_ms=n % 97,
            success=n % 5 != 0,
            error_code=None if n % 5 else "timeout",
        )
    )


def counts(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
    """Events, distinct events, and the events the runs and the rollup account for."""
    return (
        conn.execute("SELECT count(*) FROM events").fetchone()[0],
        conn.execute("SELECT count(DISTINCT event_id) FROM events").fetchone()[0],
        conn.execute("SELECT sum(requests) FROM runs").fetchone()[0],
        conn.execute("SELECT sum(requests) FROM rollup").fetchone()[0],
    )


@pytest.mark.parametrize("variables", [None, 100])
def test_a_batch_partly_stored_already_adds_only_the_new_rows(variables: int | None) -> None:
    """Multi-row statements ignore stored rows and count only new ones, whatever SQLite's limit."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    if variables is not None:  # an older SQLite allows fewer variables a statement
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    migrate_schema(conn)
    # Two statements of the largest size, then some of every smaller one.
    total = 2 * INSERT_SIZES[0] + sum(INSERT_SIZES) + 2 * INSERT_SIZES[-2]
    assert store_rows(conn, [[row(n) for n in range(0, total, 2)]]) == (total + 1) // 2
    assert store_rows(conn, [[row(n) for n in range(total)]]) == total // 2
    assert counts(conn) == (total, total, total, total)
    assert store_rows(conn, [[row(n) for n in range(total)]]) == 0
    conn.close()


def test_a_full_writer_batch_is_one_statement_of_events_when_whole() -> None:
    """``whole``: the writer's full batch is one INSERT; without it, the usual sizes."""
    assert WHOLE_BATCH == DEFAULT_BATCH
    for whole, expected in ((False, 11), (True, 1)):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        migrate_schema(conn)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        rows = [row(n) for n in range(DEFAULT_BATCH)]
        assert store_rows(conn, [rows], whole=whole) == DEFAULT_BATCH
        conn.set_trace_callback(None)
        assert sum(s.startswith("INSERT OR IGNORE INTO events") for s in statements) == expected
        assert counts(conn) == (DEFAULT_BATCH,) * 4
        conn.close()


def test_a_load_into_a_new_database_leaves_it_in_wal_mode(tmp_path: Path) -> None:
    """The load runs with a rollback journal; the database is in WAL mode again after it."""
    source = tmp_path / "m.jsonl"
    rows = [row(n) for n in range(3 * INSERT_SIZES[0])]
    append_jsonl(source, [_event(r) for r in rows])
    db = tmp_path / "m.db"
    report = import_jsonl(db, source)
    assert (report.read, report.added) == (len(rows), len(rows))
    conn = open_for_reading(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert counts(conn) == (len(rows),) * 4
    conn.close()
    assert not Path(f"{db}-journal").exists()
    assert import_jsonl(db, source).added == 0


def test_a_failed_load_into_a_new_database_leaves_it_empty_and_in_wal_mode(
    tmp_path: Path,
) -> None:
    """A line that is not an event rolls the load back; the journal mode is restored."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [_event(row(n)) for n in range(2 * INSERT_SIZES[0])])
    with source.open("ab") as f:
        f.write(b'{"event_id": 1}\n')
    db = tmp_path / "m.db"
    with pytest.raises(UsageError, match=rf"m\.jsonl:{2 * INSERT_SIZES[0] + 1}: not a metric"):
        import_jsonl(db, source)
    conn = open_for_reading(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    conn.close()


def test_a_load_while_another_connection_has_the_database_open_keeps_wal(
    tmp_path: Path,
) -> None:
    """A run holding the empty database open does not stop the import: it loads in WAL mode."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [_event(row(n)) for n in range(2 * INSERT_SIZES[0])])
    db = tmp_path / "m.db"
    prepare_database(db)  # WAL, as a run leaves it
    other = open_for_reading(db)
    try:
        report = import_jsonl(db, source)
        assert report.added == 2 * INSERT_SIZES[0]
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("SELECT count(*) FROM events").fetchone() == (report.added,)
    finally:
        other.close()


def _event(r: Row) -> MetricEvent:
    from runner.metrics._events import from_row

    return from_row(r)
