"""The metrics writer: every event sent is stored, spilled or reported, never dropped.

The SQLite writer uses aiosqlite, so these tests run on asyncio (the default
backend); the sinks other components use in their tests run on trio too.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from runner._errors import UsageError
from runner.config._model import MetricsConfig
from runner.metrics._events import MetricEvent
from runner.metrics._query import Filters, Grouping, summarize_db, summarize_events
from runner.metrics._store import Compaction, open_for_reading, read_jsonl, spill_path
from runner.metrics._writer import (
    JsonlStore,
    MemorySink,
    NullSink,
    SqliteStore,
    open_event_writer,
    open_metrics_writer,
)

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


def event(n: int) -> MetricEvent:
    return MetricEvent(
        event_id=f"e{n}",
        task_id=f"t{n}",
        provider=("p1", "p2")[n % 2],
        role="coder",
        model="m",
        attempt=1,
        ts=BASE + timedelta(milliseconds=n),
        latency_ms=1.5,
        success=True,
    )


def stored_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return sorted(r[0] for r in conn.execute("SELECT event_id FROM events"))
    finally:
        conn.close()


class FakeStore:
    """A store the test controls: it can fail, or hold every write until released."""

    name = "fake.db"

    def __init__(self, *, fail: bool = False, hold: bool = False) -> None:
        self.fail = fail
        self.hold = anyio.Event()
        if not hold:
            self.hold.set()
        self.events: list[MetricEvent] = []
        self.writes = 0
        self.closed = False

    async def write(self, events: Sequence[MetricEvent]) -> None:
        self.writes += 1
        if self.fail:
            raise sqlite3.OperationalError("database is locked")
        await self.hold.wait()
        self.events.extend(events)

    async def aclose(self) -> None:
        self.closed = True


async def no_sleep(_: float) -> None:
    await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_concurrent_producers_have_every_event_stored(tmp_path: Path) -> None:
    """Ten producers sending 300 events each through small batches: all 3000 are stored."""
    db = tmp_path / "m.db"
    config = MetricsConfig(store="sqlite", path=str(db))
    async with open_metrics_writer(config, buffer_size=16, batch_size=7) as sink:

        async def produce(k: int) -> None:
            for n in range(300):
                await sink.send(event(k * 1000 + n))
                if n % 50 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(produce, k)
    assert stored_ids(db) == sorted(f"e{k * 1000 + n}" for k in range(10) for n in range(300))


@pytest.mark.anyio
async def test_the_writer_compacts_runs_when_events_trickle_in(tmp_path: Path) -> None:
    """One event per transaction: the writer merges small runs, and the summary stays exact."""
    db = tmp_path / "m.db"
    store = await SqliteStore.open(str(db), compaction=Compaction(small=8, count=3))
    sent = [event(n) for n in range(200)]
    async with open_event_writer(
        store, spill=JsonlStore(spill_path(db)), batch_size=1, buffer_size=1
    ) as sink:
        for e in sent:
            await sink.send(e)
    conn = open_for_reading(db)
    try:
        (runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
        summary = summarize_db(conn, Filters(), Grouping())
    finally:
        conn.close()
    # Two series of 100 events: at most 100 / 8 full runs and 2 small ones each, not 200 runs.
    assert runs <= 2 * (100 // 8 + 2)
    assert summary == summarize_events(sent, Filters(), Grouping())


@pytest.mark.anyio
async def test_events_sent_just_before_exit_are_flushed(tmp_path: Path) -> None:
    """Leaving the context right after the last send still stores every event."""
    db = tmp_path / "m.db"
    async with open_metrics_writer(MetricsConfig(path=str(db))) as sink:
        for n in range(1234):
            await sink.send(event(n))
    assert len(stored_ids(db)) == 1234


@pytest.mark.anyio
async def test_cancelling_the_surrounding_scope_still_flushes(tmp_path: Path) -> None:
    """Cancellation of the caller's scope does not lose what was already sent."""
    db = tmp_path / "m.db"
    with anyio.CancelScope() as scope:
        async with open_metrics_writer(MetricsConfig(path=str(db))) as sink:
            for n in range(500):
                await sink.send(event(n))
            scope.cancel()
            await anyio.sleep_forever()
    assert len(stored_ids(db)) == 500


@pytest.mark.anyio
async def test_an_unopenable_database_falls_back_to_jsonl(tmp_path: Path) -> None:
    """A directory where the database should be: a warning, and every event in the spill file."""
    db = tmp_path / "m.db"
    db.mkdir()
    err = io.StringIO()
    async with open_metrics_writer(MetricsConfig(path=str(db)), stderr=err) as sink:
        for n in range(100):
            await sink.send(event(n))
    assert f"cannot open SQLite database {db}" in err.getvalue()
    assert f"writing events to {db}.spill.jsonl (JSONL) instead" in err.getvalue()
    assert list(read_jsonl(spill_path(db))) == [event(n) for n in range(100)]


@pytest.mark.anyio
async def test_a_failing_store_is_retried_then_spilled(tmp_path: Path) -> None:
    """Writes that keep failing are retried, then spilled to JSONL; none lost; stderr says so."""
    store = FakeStore(fail=True)
    spill = JsonlStore(tmp_path / "fake.db.spill.jsonl")
    err = io.StringIO()
    async with open_event_writer(
        store, spill=spill, stderr=err, batch_size=10, retries=2, sleep=no_sleep
    ) as sink:
        for n in range(25):
            await sink.send(event(n))
    assert store.writes == 3  # the first batch: one try and two retries, then spilling
    assert list(read_jsonl(spill.name)) == [event(n) for n in range(25)]
    text = err.getvalue()
    assert "cannot write to fake.db (database is locked)" in text
    assert f"25 events are in {spill.name}; import them with: python -m runner" in text
    assert store.closed


@pytest.mark.anyio
async def test_producers_wait_when_the_writer_is_behind() -> None:
    """Writer held, buffer of 2: the producer blocks after 3 sends; nothing is dropped."""
    store = FakeStore(hold=True)
    sent = 0
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), buffer_size=2, batch_size=1
    ) as sink:

        async def produce() -> None:
            nonlocal sent
            for n in range(10):
                await sink.send(event(n))
                sent += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            # One event is in the held write, two fill the buffer; the fourth waits.
            assert sent == 3
            store.hold.set()
    assert sent == 10
    assert store.events == [event(n) for n in range(10)]


@pytest.mark.anyio
async def test_flush_returns_once_every_event_sent_before_it_is_stored() -> None:
    """flush() waits for the write in flight and the queued events; later sends don't hold it."""
    store = FakeStore(hold=True)
    flushed = anyio.Event()
    async with open_event_writer(store, spill=JsonlStore("unused.jsonl"), batch_size=2) as sink:
        for n in range(5):
            await sink.send(event(n))

        async def flush() -> None:
            await sink.flush()
            flushed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            assert not flushed.is_set()  # the writer is held on its first batch
            await sink.send(event(5))
            store.hold.set()
            await flushed.wait()
            assert [e.event_id for e in store.events[:5]] == [f"e{n}" for n in range(5)]
        await sink.flush()
        assert len(store.events) == 6
    await sink.flush()  # after the writer stopped: returns at once


@pytest.mark.anyio
async def test_a_flush_past_its_deadline_spills_what_is_left(tmp_path: Path) -> None:
    """A writer stuck at shutdown: past the deadline, in-flight and queued events are spilled."""
    store = FakeStore(hold=True)
    spill = JsonlStore(tmp_path / "spill.jsonl")
    err = io.StringIO()
    async with open_event_writer(
        store, spill=spill, stderr=err, batch_size=4, flush_deadline=0.01
    ) as sink:
        for n in range(10):
            await sink.send(event(n))
    assert sorted(e.event_id for e in read_jsonl(spill.name)) == sorted(f"e{n}" for n in range(10))
    assert "flush deadline passed; spilling 10 events" in err.getvalue()


@pytest.mark.anyio
async def test_unwritable_database_and_spill_fail_before_any_work(tmp_path: Path) -> None:
    """When neither SQLite nor the spill file can be opened, opening raises a UsageError."""
    db = tmp_path / "m.db"
    db.mkdir()
    spill_path(db).mkdir()
    with pytest.raises(UsageError, match=r"set metrics\.store: none"):
        async with open_metrics_writer(MetricsConfig(path=str(db))):
            pass


@pytest.mark.anyio
async def test_the_jsonl_store_appends_one_line_per_event(tmp_path: Path) -> None:
    """store: jsonl writes MetricEvent lines to metrics.path as given."""
    path = tmp_path / "runs" / "metrics.jsonl"
    async with open_metrics_writer(MetricsConfig(store="jsonl", path=str(path))) as sink:
        for n in range(3):
            await sink.send(event(n))
    assert list(read_jsonl(path)) == [event(0), event(1), event(2)]


@pytest.mark.anyio
async def test_store_none_yields_a_sink_that_stores_nothing(tmp_path: Path) -> None:
    """store: none creates no file and accepts every event."""
    path = tmp_path / "m.db"
    async with open_metrics_writer(MetricsConfig(store="none", path=str(path))) as sink:
        assert isinstance(sink, NullSink)
        await sink.send(event(0))
    assert not path.exists()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_memory_sink_collects_events_on_both_backends() -> None:
    """MemorySink keeps every event, in order, on asyncio and trio."""
    sink = MemorySink()
    for n in range(3):
        await sink.send(event(n))
    assert sink.events == [event(0), event(1), event(2)]
