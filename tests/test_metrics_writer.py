"""The metrics writer: every event sent is stored, spilled or reported, never dropped.

Every test runs on asyncio and trio: the SQLite store runs its transaction
in a worker thread, so nothing here needs a particular event loop.  stamina's
test mode keeps the retries from waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import stamina

from runner import StorageError, UsageError
from runner.config import MetricsConfig
from runner.metrics._events import MetricEvent, ts_to_us
from runner.metrics._jsonl import JsonlStore, read_jsonl
from runner.metrics._query import Filters, Grouping, summarize_db, summarize_events
from runner.metrics._runs import Compaction
from runner.metrics._sqlite import SqliteStore, open_for_reading
from runner.metrics._store import spill_path
from runner.metrics._writer import (
    DEFAULT_BATCH,
    MemorySink,
    NullSink,
    _StreamSink,
    open_event_writer,
    open_metrics_writer,
)

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """Retries without waiting; three tries, as the writer is configured."""
    with stamina.set_testing(True, attempts=3):
        yield


class Told:
    """A notify callback that keeps what it was told."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        self.messages.append((level, message))

    @property
    def text(self) -> str:
        return "\n".join(f"{level}: {message}" for level, message in self.messages)


def event(n: int) -> MetricEvent:
    return MetricEvent(
        event_id=f"e{n}",
        task_id=f"t{n}",
        provider=("p1", "p2")[n % 2],
        role="coder",
        model="m",
        attempt=1,
        ts_us=ts_to_us(BASE + timedelta(milliseconds=n)),
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

    async def write(self, events: Sequence[MetricEvent]) -> int:
        self.writes += 1
        if self.fail:
            raise StorageError("database is locked")
        await self.hold.wait()
        self.events.extend(events)
        return len(events)

    async def aclose(self) -> None:
        self.closed = True


async def test_concurrent_producers_have_every_event_stored(tmp_path: Path) -> None:
    """Ten producers sending 300 events each through small batches: all 3000 are stored."""
    db = tmp_path / "m.db"
    config = MetricsConfig(store="sqlite", path=str(db))
    async with open_metrics_writer(config, notify=Told(), buffer_size=16, batch_size=7) as sink:

        async def produce(k: int) -> None:
            for n in range(300):
                await sink.send(event(k * 1000 + n))
                if n % 50 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(produce, k)
    assert stored_ids(db) == sorted(f"e{k * 1000 + n}" for k in range(10) for n in range(300))


async def test_the_writer_compacts_runs_when_events_trickle_in(tmp_path: Path) -> None:
    """One event per transaction: the writer merges small runs, and the summary stays exact."""
    db = tmp_path / "m.db"
    store = await SqliteStore.open(str(db), compaction=Compaction(small=8, count=3))
    sent = [event(n) for n in range(200)]
    async with open_event_writer(
        store, spill=JsonlStore(spill_path(db)), notify=Told(), batch_size=1, buffer_size=1
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


async def test_a_writer_starved_of_the_gil_stores_a_full_batch_in_one_statement(
    tmp_path: Path,
) -> None:
    """A batch whose thread waited for the GIL turns on one statement per full batch.

    Another thread computes (holding the GIL but for the switch interval)
    while a full batch is written, as the event loop's thread does with
    thousands of calls in flight.  A batch written while nothing else runs
    leaves the store as it was.
    """
    db = tmp_path / "m.db"
    store = await SqliteStore.open(db)
    try:
        await store.write([event(n) for n in range(200)])
        assert not store.whole
        stop = threading.Event()

        def spin() -> None:  # Python that holds the GIL but for the switch interval
            while not stop.is_set():
                pass

        busy = threading.Thread(target=spin)
        busy.start()
        try:
            await store.write([event(n) for n in range(200, 200 + DEFAULT_BATCH)])
        finally:
            stop.set()
            busy.join()
        assert store.whole
        await store.write([event(n) for n in range(200 + DEFAULT_BATCH, 200 + 2 * DEFAULT_BATCH)])
    finally:
        await store.aclose()
    assert stored_ids(db) == sorted(f"e{n}" for n in range(200 + 2 * DEFAULT_BATCH))


async def test_events_sent_just_before_exit_are_flushed(tmp_path: Path) -> None:
    """Leaving the context right after the last send still stores every event."""
    db = tmp_path / "m.db"
    async with open_metrics_writer(MetricsConfig(path=str(db)), notify=Told()) as sink:
        for n in range(1234):
            await sink.send(event(n))
    assert len(stored_ids(db)) == 1234


async def test_cancelling_the_surrounding_scope_still_flushes(tmp_path: Path) -> None:
    """Cancellation of the caller's scope does not lose what was already sent."""
    db = tmp_path / "m.db"
    with anyio.CancelScope() as scope:
        async with open_metrics_writer(MetricsConfig(path=str(db)), notify=Told()) as sink:
            for n in range(500):
                await sink.send(event(n))
            scope.cancel()
            await anyio.sleep_forever()
    assert len(stored_ids(db)) == 500


async def test_an_unopenable_database_falls_back_to_jsonl(tmp_path: Path) -> None:
    """A directory where the database should be: a warning, and every event in the spill file."""
    db = tmp_path / "m.db"
    db.mkdir()
    told = Told()
    async with open_metrics_writer(MetricsConfig(path=str(db)), notify=told) as sink:
        for n in range(100):
            await sink.send(event(n))
    assert told.messages[0] == (
        "warning",
        f"metrics: cannot open SQLite database {db} (unable to open database file);"
        f" writing events to {db}.spill.jsonl (JSONL) instead",
    )
    assert list(read_jsonl(spill_path(db))) == [event(n) for n in range(100)]


async def test_a_failing_store_is_retried_then_spilled(tmp_path: Path) -> None:
    """Writes that keep failing are retried, then spilled to JSONL; none lost; stderr says so."""
    store = FakeStore(fail=True)
    spill = JsonlStore(tmp_path / "fake.db.spill.jsonl")
    told = Told()
    async with open_event_writer(store, spill=spill, notify=told, batch_size=10) as sink:
        for n in range(25):
            await sink.send(event(n))
    assert store.writes == 3  # the first batch: one try and two retries, then spilling
    assert list(read_jsonl(spill.name)) == [event(n) for n in range(25)]
    assert told.messages == [
        (
            "warning",
            f"metrics: cannot write to fake.db (database is locked); writing events to"
            f" {spill.name} instead",
        ),
        (
            "warning",
            f"metrics: 25 events are in {spill.name}; import them with:"
            f" python -m runner metrics migrate {spill.name}",
        ),
    ]
    assert store.closed


async def test_producers_wait_when_the_writer_is_behind() -> None:
    """Writer held, buffer of 2: the producer blocks after 3 sends; nothing is dropped."""
    store = FakeStore(hold=True)
    sent = 0
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), notify=Told(), buffer_size=2, batch_size=1
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


async def test_send_nowait_refuses_when_the_writer_is_behind() -> None:
    """Writer held, buffer of 2: send_nowait takes 3 events, refuses the 4th; all 3 are stored."""
    store = FakeStore(hold=True)
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), notify=Told(), buffer_size=2, batch_size=1
    ) as sink:
        assert isinstance(sink, _StreamSink)
        taken = [sink.send_nowait(event(0))]
        await anyio.wait_all_tasks_blocked()  # the writer holds event 0 in its write
        taken += [sink.send_nowait(event(n)) for n in (1, 2, 3)]
        assert taken == [True, True, True, False]
        store.hold.set()
        await sink.flush()
        assert store.events == [event(n) for n in range(3)]


async def test_the_none_store_takes_every_event_without_waiting() -> None:
    """NullSink.send_nowait never refuses (it stores nothing, so it never falls behind)."""
    assert NullSink().send_nowait(event(0)) is True


async def test_flush_returns_once_every_event_sent_before_it_is_stored() -> None:
    """flush() waits for the write in flight and the queued events; later sends don't hold it."""
    store = FakeStore(hold=True)
    flushed = anyio.Event()
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), notify=Told(), batch_size=2
    ) as sink:
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


async def test_a_flush_past_its_deadline_spills_what_is_left(tmp_path: Path) -> None:
    """A writer stuck at shutdown: past the deadline, in-flight and queued events are spilled."""
    store = FakeStore(hold=True)
    spill = JsonlStore(tmp_path / "spill.jsonl")
    told = Told()
    async with open_event_writer(
        store, spill=spill, notify=told, batch_size=4, flush_deadline=0.01
    ) as sink:
        for n in range(10):
            await sink.send(event(n))
    assert sorted(e.event_id for e in read_jsonl(spill.name)) == sorted(f"e{n}" for n in range(10))
    assert "metrics: flush deadline passed; spilling 10 events" in told.text


async def test_unwritable_database_and_spill_fail_before_any_work(tmp_path: Path) -> None:
    """When neither SQLite nor the spill file can be opened, opening raises a UsageError."""
    db = tmp_path / "m.db"
    db.mkdir()
    spill_path(db).mkdir()
    with pytest.raises(UsageError, match=r"set metrics\.store: none"):
        async with open_metrics_writer(MetricsConfig(path=str(db)), notify=Told()):
            pass


async def test_the_jsonl_store_appends_one_line_per_event(tmp_path: Path) -> None:
    """store: jsonl writes MetricEvent lines to metrics.path as given."""
    path = tmp_path / "runs" / "metrics.jsonl"
    async with open_metrics_writer(
        MetricsConfig(store="jsonl", path=str(path)), notify=Told()
    ) as sink:
        for n in range(3):
            await sink.send(event(n))
    assert list(read_jsonl(path)) == [event(0), event(1), event(2)]


async def test_store_none_yields_a_sink_that_stores_nothing(tmp_path: Path) -> None:
    """store: none creates no file and accepts every event."""
    path = tmp_path / "m.db"
    async with open_metrics_writer(
        MetricsConfig(store="none", path=str(path)), notify=Told()
    ) as sink:
        assert isinstance(sink, NullSink)
        await sink.send(event(0))
    assert not path.exists()


async def test_memory_sink_collects_events_on_both_backends() -> None:
    """MemorySink keeps every event, in order."""
    sink = MemorySink()
    for n in range(3):
        await sink.send(event(n))
    assert sink.events == [event(0), event(1), event(2)]


class FlakyStore(FakeStore):
    """Fails its first ``failures`` writes, then stores."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, events: Sequence[MetricEvent]) -> int:
        self.fail = self.writes < self.failures
        return await super().write(events)


async def test_a_write_that_fails_once_is_retried_and_nothing_spills(tmp_path: Path) -> None:
    """One failed try, then success: every event in the store, no spill file, nothing told."""
    store = FlakyStore(failures=1)
    spill = JsonlStore(tmp_path / "spill.jsonl")
    told = Told()
    async with open_event_writer(store, spill=spill, notify=told, batch_size=100) as sink:
        for n in range(20):
            await sink.send(event(n))
    assert store.events == [event(n) for n in range(20)]
    assert store.writes == 2
    assert told.messages == []
    assert not await anyio.Path(spill.name).exists()


async def test_events_neither_store_nor_spill_can_take_are_counted_as_lost(tmp_path: Path) -> None:
    """The spill file failing too: an error says how many events were lost, and where."""
    spill_dir = tmp_path / "spill.jsonl"
    spill_dir.mkdir()  # a directory where the spill file should be
    told = Told()
    async with open_event_writer(
        FakeStore(fail=True), spill=JsonlStore(spill_dir), notify=told, batch_size=100
    ) as sink:
        for n in range(7):
            await sink.send(event(n))
    assert told.messages[-1][0] == "error"
    assert told.messages[-1][1].startswith(
        f"metrics: 7 events could not be written to fake.db nor {spill_dir} ("
    )
    assert told.messages[-1][1].endswith("); they are lost")


async def test_events_sent_within_the_linger_are_written_together() -> None:
    """A burst sent one by one, with the loop turning in between, is one write after the linger."""
    store = FakeStore()
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), notify=Told(), linger=0.2
    ) as sink:
        for n in range(50):
            await sink.send(event(n))
            await anyio.lowlevel.checkpoint()  # the writer could take each event alone
        await anyio.wait_all_tasks_blocked()
        assert store.writes == 0  # still gathering
        await anyio.sleep(0.3)  # past the linger: the writer is woken, then written
        await anyio.wait_all_tasks_blocked()
        assert store.writes == 1
        assert store.events == [event(n) for n in range(50)]


async def test_without_a_linger_each_event_can_be_its_own_write() -> None:
    """linger=0: the writer takes what is waiting at once, so a trickle is written as it comes."""
    store = FakeStore()
    async with open_event_writer(
        store, spill=JsonlStore("unused.jsonl"), notify=Told(), linger=0
    ) as sink:
        for n in range(5):
            await sink.send(event(n))
            await anyio.wait_all_tasks_blocked()
            assert len(store.events) == n + 1
    assert store.writes == 5


async def test_a_flush_and_the_close_do_not_wait_for_the_linger() -> None:
    """With an hour's linger, flush() and leaving the context still return at once."""
    store = FakeStore()
    with anyio.fail_after(5):
        async with open_event_writer(
            store, spill=JsonlStore("unused.jsonl"), notify=Told(), linger=3600
        ) as sink:
            await sink.send(event(0))
            await anyio.wait_all_tasks_blocked()  # the writer is lingering over event 0
            await sink.flush()
            assert store.events == [event(0)]
            await sink.send(event(1))
            await anyio.wait_all_tasks_blocked()
        assert store.events == [event(0), event(1)]
