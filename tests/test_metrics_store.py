"""The metrics stores: schema versions, the one transaction, JSONL lines, idempotent import.

The async SQLite store runs on asyncio and trio.
"""

from __future__ import annotations

import itertools
import sqlite3
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import stamina
from hypothesis import given
from hypothesis import strategies as st

from runner import StorageError, UsageError
from runner.config import MetricsConfig
from runner.metrics import _sqlite as sqlite_store
from runner.metrics._events import MetricEvent, from_row, to_row, ts_to_us
from runner.metrics._jsonl import EventLine, append_jsonl, read_jsonl, to_line
from runner.metrics._query import Filters, Grouping, export_db, summarize_db
from runner.metrics._runs import Compaction, batch_runs, to_merge, unpack_latencies
from runner.metrics._sqlite import (
    ADD_ROLLUP,
    INSERT_RUN,
    MIGRATIONS,
    SCHEMA_VERSION,
    SqliteStore,
    import_jsonl,
    migrate_schema,
    open_for_reading,
    prepare_database,
    schema_version,
    store_rows,
)
from runner.metrics._store import spill_path
from runner.metrics._writer import open_metrics_writer

RUN_COLUMNS = (
    "provider, role, first_id, last_id, min_ts_us, max_ts_us, requests, latency_us_sum,"
    " latency_us_max, input_tokens, output_tokens, cost_nusd, errors, latencies"
)
BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


def event(n: int, **kw: object) -> MetricEvent:
    fields: dict[str, object] = {
        "event_id": f"e{n}",
        "task_id": f"t{n}",
        "provider": "p1",
        "role": "coder",
        "model": "m",
        "attempt": 1,
        "ts_us": ts_to_us(BASE + timedelta(milliseconds=n)),
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


def torn_lines(path: Path) -> tuple[list[MetricEvent], list[int]]:
    """Every event read from a JSONL file, and the numbers of the torn lines skipped."""
    torn: list[int] = []
    events = list(read_jsonl(path, on_torn=lambda number, _: torn.append(number)))
    return events, torn


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    """A crash mid-line loses only that line, and says which line it was."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [event(0), event(1)])
    with path.open("ab") as f:
        f.write(b'{"event_id": "e2", "task')
    assert torn_lines(path) == ([event(0), event(1)], [3])


def test_an_append_after_a_torn_line_starts_on_a_fresh_line(tmp_path: Path) -> None:
    """After a crash mid-write, the next run's events are whole lines: the fragment stays alone.

    Failed before the fix: the next append continued the fragment's line, and
    that line hid the first event of the run.
    """
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [event(n) for n in range(100)])
    with path.open("ab") as f:
        f.write(b'{"event_id": "e100", "task')
    append_jsonl(path, [event(n) for n in range(101, 201)])
    lines = path.read_bytes().split(b"\n")
    assert lines[100] == b'{"event_id": "e100", "task'
    assert lines[101].startswith(b'{"event_id":"e101"')
    assert torn_lines(path) == ([event(n) for n in range(201) if n != 100], [101])


def test_migrate_imports_every_whole_event_around_a_torn_line(tmp_path: Path) -> None:
    """200 events with a torn line between them: migrate imports all 200 and names the line.

    Failed before the fix: the run after the crash appended onto the fragment,
    and migrate stopped at that line having imported 0 of 200 events.
    """
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(100)])
    with source.open("ab") as f:
        f.write(b'{"event_id": "x", "task_id": "t", "prov')
    append_jsonl(source, [event(n) for n in range(100, 200)])
    db = tmp_path / "m.db"
    told: list[int] = []
    report = import_jsonl(db, source, on_torn=lambda number, _: told.append(number))
    assert (report.read, report.added, report.torn, told) == (200, 200, [101], [101])


def test_a_whole_event_glued_to_a_fragment_is_still_read(tmp_path: Path) -> None:
    """A file from before fresh-line appends (fragment and event on one line) keeps the event."""
    path = tmp_path / "old.jsonl"
    append_jsonl(path, [event(0)])
    with path.open("ab") as f:
        f.write(b'{"event_id": "e1", "ta')
        f.write(to_line_bytes(event(2)) + b"\n")
    append_jsonl(path, [event(3)])
    assert torn_lines(path) == ([event(0), event(2), event(3)], [2])


def to_line_bytes(e: MetricEvent) -> bytes:
    import msgspec

    return msgspec.json.encode(to_line(e))


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    """A complete line that is JSON but not an event is a UsageError with its line number."""
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [event(0)])
    with path.open("ab") as f:
        f.write(b'{"nope": 1}\n')
    append_jsonl(path, [event(2)])
    with pytest.raises(UsageError, match=rf"{path.name}:2: not a metric event"):
        list(read_jsonl(path))


def test_a_bad_line_imports_nothing(tmp_path: Path) -> None:
    """migrate is one transaction: a line that is not an event leaves the database unchanged."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(10)])
    with source.open("ab") as f:
        f.write(b'{"event_id": 1}\n')
    db = tmp_path / "m.db"
    with pytest.raises(UsageError, match=r"m\.jsonl:11: not a metric event"):
        import_jsonl(db, source)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    conn.close()


def test_the_line_format_is_the_event_with_an_iso_time(tmp_path: Path) -> None:
    """A line has the event's fields in order with ts as ISO 8601 UTC; old lines still read."""
    assert EventLine.__struct_fields__ == tuple(
        "ts" if f == "ts_us" else f for f in MetricEvent.__struct_fields__
    )
    e = event(0, ts_us=ts_to_us(BASE) + 123_456)
    assert b'"ts":"2026-11-26T21:00:00.123456Z"' in to_line_bytes(e)
    path = tmp_path / "old.jsonl"
    path.write_bytes(  # as the docs show it, with a naive time (read as UTC) on the second line
        b'{"event_id": "a", "task_id": "t", "provider": "p", "role": "r", "model": "m",'
        b' "attempt": 1, "ts": "2026-11-26T21:00:00.5Z", "latency_ms": 1.5, "success": true}\n'
        b'{"event_id": "b", "task_id": "t", "provider": "p", "role": "r", "model": "m",'
        b' "attempt": 2, "ts": "2026-11-26T21:00:01", "latency_ms": 2.0, "success": false,'
        b' "error_code": "timeout"}\n'
    )
    a, b = read_jsonl(path)
    assert (a.ts_us, b.ts_us) == (ts_to_us(BASE) + 500_000, ts_to_us(BASE) + 1_000_000)
    assert b.error_code == "timeout"


@given(
    latency=st.floats(0, 1e7, allow_nan=False),
    cost=st.floats(0, 1e3, allow_nan=False),
    us=st.integers(0, 2**52),
)
def test_a_line_rounds_to_the_same_row_as_its_event(latency: float, cost: float, us: int) -> None:
    """The bulk import's row straight from a line equals the row of the event it holds."""
    line = to_line(event(0, latency_ms=latency, cost_usd=cost, ts_us=us))
    assert line.row() == to_row(line.event())


def test_importing_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    """The second import of a JSONL file reads every event and adds none."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(25)])
    db = tmp_path / "m.db"
    assert (import_jsonl(db, source).read, import_jsonl(db, source).added) == (25, 0)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (25,)
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (25,)
    assert conn.execute("SELECT sum(requests) FROM rollup").fetchone() == (25,)
    conn.close()


def test_a_file_holding_an_event_twice_imports_it_once_into_a_new_database(
    tmp_path: Path,
) -> None:
    """The bulk path (index built after the load) still drops duplicates, and runs add up."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(30)])
    append_jsonl(source, [event(n) for n in range(10, 20)])  # a spill after a flush deadline
    db = tmp_path / "m.db"
    report = import_jsonl(db, source)
    assert (report.read, report.added) == (40, 30)
    conn = open_for_reading(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (30,)
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (30,)
    assert conn.execute("SELECT sum(requests) FROM rollup").fetchone() == (30,)
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("events_identity",) in indexes
    conn.close()
    assert import_jsonl(db, source).added == 0


def test_the_bulk_import_leaves_the_database_the_writer_would(tmp_path: Path) -> None:
    """Imported into a new database or written batch by batch: same summary, same export."""
    from runner.metrics._query import Filters, Grouping, export_db, summarize_db

    events = [
        event(n, provider=f"p{n % 3}", success=n % 4 != 0, latency_ms=n % 17) for n in range(500)
    ]
    source = tmp_path / "m.jsonl"
    append_jsonl(source, events)
    bulk, batched = tmp_path / "bulk.db", tmp_path / "batched.db"
    import_jsonl(bulk, source)
    prepare_database(batched)
    conn = sqlite3.connect(batched, isolation_level=None)
    for start in range(0, 500, 7):
        store_rows(conn, [[to_row(e) for e in events[start : start + 7]]])
    conn.close()
    seen = []
    for db in (bulk, batched):
        conn = open_for_reading(db)
        seen.append((summarize_db(conn, Filters(), Grouping()), list(export_db(conn, Filters()))))
        conn.close()
    assert seen[0] == seen[1]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_the_sqlite_store_writes_on_both_backends(tmp_path: Path) -> None:
    """SqliteStore runs its transaction in a worker thread, so it works on asyncio and trio."""
    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        assert await store.write([event(n) for n in range(10)]) == 10
        assert await store.write([event(n) for n in range(5, 15)]) == 5  # a re-sent half
    finally:
        await store.aclose()
    conn = open_for_reading(tmp_path / "m.db")
    assert conn.execute("SELECT sum(requests) FROM rollup").fetchone() == (15,)
    conn.close()


@pytest.mark.anyio
async def test_the_writer_stores_no_error_code_as_null_like_an_import(tmp_path: Path) -> None:
    """Successes the writer stores have a NULL error code, as imported ones do: same export."""
    events = [
        event(n, success=n % 3 != 0, error_code=None if n % 3 else "timeout") for n in range(30)
    ]
    events.append(event(30, success=False, error_code=""))  # an empty code stays empty
    store = await SqliteStore.open(tmp_path / "written.db")
    try:
        assert await store.write(events) == 31
    finally:
        await store.aclose()
    source = tmp_path / "m.jsonl"
    append_jsonl(source, events)
    import_jsonl(tmp_path / "imported.db", source)
    seen = []
    for name in ("written.db", "imported.db"):
        conn = open_for_reading(tmp_path / name)
        codes = conn.execute("SELECT error_code, typeof(error_code) FROM events ORDER BY id")
        seen.append(
            (
                codes.fetchall(),
                summarize_db(conn, Filters(), Grouping()),
                list(export_db(conn, Filters())),
            )
        )
        conn.close()
    assert seen[0] == seen[1]
    assert seen[0][0][:2] == [("timeout", "text"), (None, "null")]
    assert seen[0][0][-1] == ("", "text")
    assert [e.error_code for e in seen[0][2]] == [e.error_code for e in events]


@pytest.mark.anyio
async def test_a_store_that_cannot_be_opened_raises_store_error(tmp_path: Path) -> None:
    """A directory where the database should be: StorageError with the driver's reason."""
    (tmp_path / "m.db").mkdir()
    with pytest.raises(StorageError, match="unable to open database file"):
        await SqliteStore.open(tmp_path / "m.db")


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
    told: list[str] = []
    with stamina.set_testing(True, attempts=3):
        async with open_metrics_writer(
            MetricsConfig(path=str(db)), notify=lambda level, text: told.append(text)
        ) as sink:
            for n in range(40):
                await sink.send(event(n))
    assert list(read_jsonl(spill_path(db))) == [event(n) for n in range(40)]
    assert f"metrics: cannot write to {db} (disk full)" in told[0]
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
        store_rows(conn, [[to_row(e) for e in events[start : start + size]]], compaction=compaction)
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
        store_rows(conn, [[to_row(event(n))]], compaction=None)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (10,)


def test_to_merge_needs_count_small_runs_at_the_end() -> None:
    """Only when the newest `count` runs are all small are they merged, oldest id first."""
    c = Compaction(small=10, count=3)
    assert to_merge([(9, 1), (8, 2), (7, 9), (6, 500)], c) == [7, 8, 9]
    assert to_merge([(9, 1), (8, 10), (7, 9)], c) == []
    assert to_merge([(9, 1), (8, 2)], c) == []


def old_database(path: Path, version: int, events: list[MetricEvent]) -> None:
    """A database at schema ``version`` holding ``events``, as that version's runner wrote them.

    Before version 3 events had no tags: the rows are inserted without that column.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for step in range(version):
        for statement in MIGRATIONS[step]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?)", (step + 1,))
    rows = [to_row(e)[:13] for e in events]
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (event_id, task_id, provider, role, model, attempt, ts_us,"
        " latency_us, success, error_code, input_tokens, output_tokens, cost_nusd)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    runs, rollup = batch_runs(1, rows)  # type: ignore[arg-type]  # rows without tags
    conn.executemany(INSERT_RUN, runs)
    conn.executemany(ADD_ROLLUP, rollup)
    conn.execute("COMMIT")
    conn.close()


def test_a_version_1_database_gains_the_runs_index_and_keeps_its_events(tmp_path: Path) -> None:
    """Opening a database written before compaction migrates it and loses nothing."""
    db = tmp_path / "m.db"
    old_database(db, 1, [event(n) for n in range(5)])
    conn = open_for_reading(db)
    assert schema_version(conn) == SCHEMA_VERSION == 3
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("runs_series",) in indexes
    assert conn.execute("SELECT sum(requests) FROM runs").fetchone() == (5,)
    conn.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_version_2_database_gains_tags_on_open(tmp_path: Path) -> None:
    """A database from before tags migrates when the writer opens it: old events read
    untagged, new events keep their tags, and every figure covers both."""
    db = tmp_path / "m.db"
    old = [event(n, success=True, error_code=None) for n in range(4)]
    old_database(db, 2, old)
    new = [event(n, tags=("nightly", "node:plan")) for n in range(4, 7)]
    store = await SqliteStore.open(db)
    try:
        assert await store.write(new) == 3
    finally:
        await store.aclose()
    conn = open_for_reading(db)
    try:
        assert schema_version(conn) == 3
        assert list(export_db(conn, Filters())) == old + new
        assert [e.event_id for e in export_db(conn, Filters(tags=("nightly",)))] == [
            "e4", "e5", "e6"
        ]  # fmt: skip
        by_tag = {
            r.tag: (r.requests, r.failures)
            for r in summarize_db(conn, Filters(), Grouping(provider=False, role=False, tag=True))
        }
        (whole,) = summarize_db(conn, Filters(), Grouping())
    finally:
        conn.close()
    assert by_tag == {"nightly": (3, 3), "node:plan": (3, 3), None: (4, 0)}
    assert (whole.requests, whole.failures) == (7, 3)


def test_a_big_file_read_by_a_child_process_imports_the_same(tmp_path: Path) -> None:
    """The reader process gives the same report, torn lines and database as reading inline."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(300)])
    with source.open("ab") as f:
        f.write(b'{"event_id": "x", "ta')
    append_jsonl(source, [event(n) for n in range(300, 400)])
    told: list[int] = []
    inline = import_jsonl(tmp_path / "a.db", source)
    child = import_jsonl(
        tmp_path / "b.db", source, on_torn=lambda n, _: told.append(n), child_threshold=0
    )
    assert child == inline
    assert (child.read, child.added, child.torn, told) == (400, 400, [301], [301])
    exported = []
    for name in ("a.db", "b.db"):
        conn = open_for_reading(tmp_path / name)
        exported.append(list(export_db(conn, Filters())))
        conn.close()
    assert exported[0] == exported[1]


def test_a_bad_line_found_by_the_child_process_imports_nothing(tmp_path: Path) -> None:
    """The reader process reports a line that is not an event; the import is rolled back."""
    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(5)])
    with source.open("ab") as f:
        f.write(b'{"event_id": 1}\n')
    with pytest.raises(UsageError, match=r"m\.jsonl:6: not a metric event"):
        import_jsonl(tmp_path / "m.db", source, child_threshold=0)
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    conn.close()


def test_a_failing_database_stops_the_reader_process(tmp_path: Path) -> None:
    """The insert fails while the child is still reading: the error comes up, the child is gone."""
    import multiprocessing

    source = tmp_path / "m.jsonl"
    append_jsonl(source, [event(n) for n in range(20_000)])
    db = tmp_path / "m.db"
    prepare_database(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.Error, match="disk full"):
        import_jsonl(db, source, child_threshold=0)
    assert multiprocessing.active_children() == []


def test_prepared_figures_follow_the_rows_to_their_ids(tmp_path: Path) -> None:
    """Figures built for ids 1.. are moved to where a batch really lands (a non-empty database)."""
    from runner.metrics._query import Filters, Grouping, summarize_db, summarize_events
    from runner.metrics._runs import Prepared, batch_runs

    rows = [to_row(event(n, provider=f"p{n % 2}")) for n in range(10, 20)]
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    store_rows(conn, [[to_row(event(n)) for n in range(10)]])
    store_rows(conn, [Prepared(rows, 1, *batch_runs(1, rows))])
    spans = conn.execute("SELECT first_id, last_id FROM runs ORDER BY id").fetchall()
    assert spans[1:] == [(11, 19), (12, 20)]  # p0 has ids 11, 13, ..., p1 has 12, 14, ...
    expected = [event(n) for n in range(10)] + [
        event(n, provider=f"p{n % 2}") for n in range(10, 20)
    ]
    assert summarize_db(conn, Filters(), Grouping()) == summarize_events(
        expected, Filters(), Grouping()
    )
    conn.close()


def _tables(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    """Every stored value of a metrics database, ids included."""
    return [
        conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()  # noqa: S608
        for table in ("events", "runs", "rollup")
    ]


def _varied(start: int, count: int) -> list[MetricEvent]:
    """Events over twelve series with successes, failures, no code, an empty code and tags."""
    return [
        event(
            n,
            provider=f"p{n % 4}",
            role=("coder", "critic", "planner")[n % 3],
            success=n % 5 != 0,
            error_code=None if n % 5 else ("timeout", "", None)[n % 3],
            latency_ms=(n * 37) % 1000 + 0.5,
            tags=("a", "b") if n % 2 else (),
            model="m\u00e9\u2028",
        )
        for n in range(start, start + count)
    ]


def _batch_statements(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Make every batch take the one-statement figures (``json``) or the row-by-row ones."""
    monkeypatch.setattr(sqlite_store, "SMALL_BATCH", -1 if kind == "json" else 10**9)


def test_the_batch_statements_store_what_the_row_by_row_ones_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one-statement runs, rollup and compaction check leave every value the others do.

    Several series with failures, then a re-sent batch half stored already,
    with compaction: events (ids included), runs and rollup are identical.
    """
    first, again = _varied(0, 700), _varied(350, 700)
    compaction = Compaction(small=64, count=3)
    seen = []
    for kind in ("json", "rows"):
        _batch_statements(monkeypatch, kind)
        conn = sqlite3.connect(":memory:", isolation_level=None)
        migrate_schema(conn)
        store_rows(conn, [[to_row(e) for e in first[:1]]], compaction=compaction)
        for start, end in ((1, 8), (8, 58), (58, 558)):
            batch = first[start:end]
            store_rows(conn, [[to_row(e) for e in batch]], compaction=compaction)
        assert store_rows(conn, [[to_row(e) for e in first]], compaction=compaction) == 142
        assert store_rows(conn, [[to_row(e) for e in again]], compaction=compaction) == 350
        seen.append(_tables(conn))
        conn.close()
    assert seen[0] == seen[1]


def test_a_batch_lands_in_its_order_with_the_figures_build_runs_gives() -> None:
    """New events take consecutive ids in batch order; runs and rollup are build_runs' own."""
    rows = [to_row(e) for e in _varied(0, 300)]
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    store_rows(conn, [rows], compaction=None)
    ids = conn.execute("SELECT id, event_id FROM events ORDER BY id").fetchall()
    assert ids == [(i + 1, r[0]) for i, r in enumerate(rows)]
    runs, rollup = batch_runs(1, rows)
    assert conn.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id").fetchall() == runs  # noqa: S608
    assert sorted(conn.execute("SELECT * FROM rollup").fetchall()) == sorted(rollup)


def test_a_nul_in_a_string_is_stored_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings SQLite's JSON would cut short at a NUL are stored whole, as the row inserts do."""
    _batch_statements(monkeypatch, "json")
    events = [event(n, task_id=f"t\x00{n}", error_code="bad\x00code") for n in range(3)]
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    assert store_rows(conn, [[to_row(e) for e in events]]) == 3
    assert conn.execute("SELECT task_id FROM events ORDER BY id").fetchall() == [
        (f"t\x00{n}",) for n in range(3)
    ]
    assert conn.execute("SELECT outcome FROM rollup").fetchall() == [("bad\x00code",)]


@pytest.mark.parametrize("kind", ["json", "rows"])
def test_every_series_of_a_batch_is_compacted_on_its_own(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """With forty series in each small batch, each series' runs merge as if written alone."""
    _batch_statements(monkeypatch, kind)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    compaction = Compaction(small=64, count=4)
    n = 0
    for _ in range(7):
        batch = [event(n + i, provider=f"p{i % 40}", role=f"r{i % 40}") for i in range(80)]
        store_rows(conn, [[to_row(e) for e in batch]], compaction=compaction)
        n += 80
    runs = conn.execute(
        "SELECT provider, role, requests FROM runs ORDER BY provider, id"
    ).fetchall()
    # Each series: write 4 merges its four runs of 2 into one of 8 (still small), write 7
    # merges that one with the next three: one run of 14 events.
    assert runs == [(f"p{i}", f"r{i}", 14) for i in sorted(range(40), key=str)]
